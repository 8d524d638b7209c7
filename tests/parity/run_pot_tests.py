"""Run POT's own Sinkhorn, ``ot.solve`` and ``ot.da`` tests against SNS (``tox -e pot-parity``).

POT's wheel ships no tests; its sdist ships ``test/test_*.py``. This script

1. downloads the sdist of the *installed* POT version with pip (kept in a
   cache folder, so a second run needs no network),
2. extracts ``test/test_bregman.py``, ``test/test_solvers.py`` and
   ``test/test_da.py`` into a temporary folder, next to a copy of
   ``tests/parity/pot_conftest.py`` named ``conftest.py`` (it selects the
   tests and routes POT's entropic solves, balanced and unbalanced, to SNS),
3. runs pytest there with ``-p pot_sns.testing`` and returns its exit code.

POT's code is never copied into this repository.

Usage::

    python tests/parity/run_pot_tests.py [--cache DIR] [--keep] [pytest arguments...]

Environment: ``POT_SNS_PARITY_CACHE`` sets the default cache folder;
``POT_SNS_PARITY_ALL=1`` runs every test of the files (routed) instead of
the selection, to review the selection against a new POT release.
"""

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEST_FILES = ("test_bregman.py", "test_solvers.py", "test_da.py")


def pot_version():
    """Version of the installed POT distribution (e.g. ``0.9.7.post1``)."""
    return importlib.metadata.version("POT")


def find_sdist(folder, version):
    """The cached sdist of POT ``version`` in ``folder``, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if name in ("pot-%s.tar.gz" % version.lower(), "pot-%s.tar.gz" % version):
            return path
    return None


def download_sdist(folder, version):
    """Download the sdist with pip (only POT's own source: its build
    dependencies may come as wheels, hence ``--no-binary pot`` rather than
    ``:all:``, which would also build numpy from source)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "pot",
           "--dest", str(folder), "pot==%s" % version]
    print("pot-parity: " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    path = find_sdist(folder, version)
    if path is None:
        raise SystemExit("pot-parity: pip did not leave an sdist of POT %s in %s"
                         % (version, folder))
    return path


def extract_tests(sdist, dest):
    """Copy POT's ``test/<name>`` members of ``sdist`` into ``dest``."""
    found = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            # <pot-x.y.z>/test/<file>; nothing else is read from the archive
            if len(parts) == 3 and parts[1] == "test" and parts[2] in TEST_FILES \
                    and member.isfile():
                with tar.extractfile(member) as src:
                    (Path(dest) / parts[2]).write_bytes(src.read())
                found[parts[2]] = member.name
    missing = [name for name in TEST_FILES if name not in found]
    if missing:
        raise SystemExit("pot-parity: %s has no test/%s" % (sdist, ", test/".join(missing)))
    return [Path(dest) / name for name in TEST_FILES]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.environ.get(
        "POT_SNS_PARITY_CACHE", str(Path.home() / ".cache" / "pot_sns" / "pot-sdist")),
        help="folder for the downloaded sdist (default: %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder with POT's tests")
    args, pytest_args = parser.parse_known_args(argv)

    version = pot_version()
    sdist = find_sdist(args.cache, version) or download_sdist(args.cache, version)
    print("pot-parity: POT %s, tests from %s" % (version, sdist), flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="pot_sns_parity_"))
    try:
        files = extract_tests(sdist, workdir)
        shutil.copyfile(HERE / "pot_conftest.py", workdir / "conftest.py")
        # an ini file of its own: the repository's pytest settings do not apply
        (workdir / "pytest.ini").write_text("[pytest]\n")
        cmd = [sys.executable, "-m", "pytest", "-p", "pot_sns.testing",
               "-c", str(workdir / "pytest.ini"), "--rootdir", str(workdir),
               "-p", "no:cacheprovider"] + [str(f) for f in files] + pytest_args
        print("pot-parity: " + " ".join(cmd), flush=True)
        return subprocess.call(cmd, cwd=str(workdir))
    finally:
        if args.keep:
            print("pot-parity: POT's tests kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
