"""Checkpoint directories: finished chunks as ``.npz`` files and a JSON manifest.

Layout of a checkpoint directory::

    manifest.json                       format, fingerprint of the job, shape, ...
    chunk-000000000000-000000000049.npz one finished chunk (first and last position)
    ...

A chunk file holds plain arrays (:data:`pot_sns.batch.results.FIELDS`; the
status as a fixed-width unicode array), written to a temporary name and
renamed, so that a job killed while writing leaves no half file behind; it is
read with ``allow_pickle=False``. The manifest's fingerprint is a hash of the
inputs and solver settings (not of the chunk size, the client or the number
of workers): a rerun of the same job finds its chunks whatever its chunking,
and a job with other inputs is refused.
"""

import datetime
import json
import os
import uuid
import warnings
import zipfile

import numpy as np

from .results import FIELDS

MANIFEST = "manifest.json"
FORMAT = "pot_sns-checkpoint/1"


def _write_atomic(path, write):
    tmp = os.path.join(os.path.dirname(path), ".tmp-%d-%s" % (os.getpid(), uuid.uuid4().hex))
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class Checkpoint:
    """An open checkpoint directory of one job (see :meth:`open`).

    Parameters
    ----------
    path : str
        The directory.
    fingerprint : str
        The job's fingerprint, as in the manifest.
    """

    def __init__(self, path, fingerprint):
        self.path, self.fingerprint = path, fingerprint

    @classmethod
    def open(cls, path, fingerprint, meta):
        """Open (or create) the checkpoint directory ``path`` for a job.

        Parameters
        ----------
        path : str or os.PathLike
            Directory; created when missing.
        fingerprint : str
            Fingerprint of the job's inputs and settings.
        meta : dict
            JSON-able description stored in a new manifest.

        Returns
        -------
        checkpoint : Checkpoint

        Raises
        ------
        TypeError
            ``path`` is not a path.
        ValueError
            ``path`` is a file, a non-empty directory without manifest, or a
            checkpoint of another job; the message names ``checkpoint``.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError("checkpoint must be a directory path (str or os.PathLike), got %s"
                            % type(path).__name__)
        path = os.path.abspath(os.fspath(path))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError("checkpoint must be a directory, %r is a file" % path)
        manifest = os.path.join(path, MANIFEST)
        if os.path.isfile(manifest):
            cls._check_manifest(path, manifest, fingerprint)
            return cls(path, fingerprint)
        if os.path.isdir(path) and os.listdir(path):
            raise ValueError("checkpoint %r is a non-empty directory without a pot_sns %s; "
                             "pass a new or empty directory" % (path, MANIFEST))
        os.makedirs(path, exist_ok=True)
        content = dict(meta, format=FORMAT, fingerprint=fingerprint,
                       created=datetime.datetime.now(datetime.timezone.utc).isoformat())
        text = json.dumps(content, indent=2, sort_keys=True).encode()
        _write_atomic(manifest, lambda f: f.write(text))
        return cls(path, fingerprint)

    @staticmethod
    def _check_manifest(path, manifest, fingerprint):
        try:
            with open(manifest, "rb") as f:
                content = json.loads(f.read().decode())
            fmt, theirs = content["format"], content["fingerprint"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ValueError("checkpoint %r: %s is not a pot_sns manifest" % (path, MANIFEST)) \
                from None
        if fmt != FORMAT:
            raise ValueError("checkpoint %r has format %r, this pot_sns reads %r"
                             % (path, fmt, FORMAT))
        if theirs != fingerprint:
            raise ValueError(
                "checkpoint %r holds the results of a different job (%s): its inputs, reg or "
                "solver options differ from this call's (fingerprint %s... != %s...); pass "
                "another directory, or delete this one to start over"
                % (path, content.get("kind", "?"), theirs[:12], fingerprint[:12]))

    def chunk_files(self):
        """Names of the finished chunk files."""
        return sorted(n for n in os.listdir(self.path)
                      if n.startswith("chunk-") and n.endswith(".npz"))

    def load(self, n_pairs):
        """The finished chunks (dicts of arrays); unreadable files are
        skipped with a warning (their problems are solved again)."""
        chunks = []
        for name in self.chunk_files():
            path = os.path.join(self.path, name)
            try:
                with np.load(path, allow_pickle=False) as f:
                    chunk = {k: np.asarray(f[k]) for k in FIELDS}
                p = chunk["positions"]
                ok = (p.ndim == 1 and all(v.shape == p.shape for v in chunk.values())
                      and p.size and p.min() >= 0 and p.max() < n_pairs)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                ok = False
            if not ok:
                warnings.warn("checkpoint %r: ignoring the unreadable file %s; its problems "
                              "are solved again" % (self.path, name), UserWarning, stacklevel=4)
                continue
            chunks.append(chunk)
        return chunks

    def write(self, chunk):
        """Save a finished chunk (dict of :data:`FIELDS` arrays)."""
        p = chunk["positions"]
        name = "chunk-%012d-%012d.npz" % (p[0], p[-1])
        arrays = {k: np.asarray(chunk[k], dtype=t) for k, t in FIELDS.items()}
        _write_atomic(os.path.join(self.path, name), lambda f: np.savez(f, **arrays))
