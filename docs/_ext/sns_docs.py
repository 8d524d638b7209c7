"""Small Sphinx extension of the pot_sns docs.

- References to POT (``:func:`ot.sinkhorn```, ``ot.bregman.sinkhorn_log``,
  ``ot.utils.OTResult``...) that Sphinx cannot resolve locally become links to
  POT's online documentation. The docs are built offline, so intersphinx
  (which downloads POT's inventory) is not an option.
- :class:`ExampleOrder` orders the gallery from the first steps to the GPU
  example, instead of sorting by file name.
- The options table of ``algorithm.rst`` must name every field of
  :class:`pot_sns.SNSOptions` with its default: an option added to the code
  but not to the page, or a default changed in one place only, is a
  warning, hence an error in ``tox -e docs``.
"""

import os
import re

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

POT_DOCS = "https://pythonot.github.io/"

# gallery order: names not listed come after, alphabetically
ORDER = [
    "plot_quickstart.py",
    "plot_convergence.py",
    "plot_warmstart.py",
    "plot_torch_envelope.py",
    "gpu_cupy_torch.py",
]


class ExampleOrder:
    """Sort key of sphinx-gallery's ``within_subsection_order``."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = os.path.basename(filename)
        rank = ORDER.index(name) if name in ORDER else len(ORDER)
        return "%03d_%s" % (rank, name)

    def __repr__(self):
        return "<%s>" % self.__class__.__name__


def pot_url(target, reftype="obj"):
    """URL of a POT object in POT's documentation, or None if not POT's."""
    parts = target.split(".")
    if parts[0] != "ot":
        return None
    if reftype == "mod":
        return POT_DOCS + ("all.html" if target == "ot" else "gen_modules/%s.html" % target)
    if len(parts) < 2:
        return None
    if len(parts) == 2:
        # functions exported by ``ot`` itself are documented on all.html
        return POT_DOCS + "all.html#" + target
    module = ".".join(parts[:2])
    return POT_DOCS + "gen_modules/%s.html#%s" % (module, target)


def resolve_pot(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    url = pot_url(node.get("reftarget", ""), node.get("reftype", "obj"))
    if url is None:
        return None
    ref = nodes.reference("", "", internal=False, refuri=url, reftitle="(in POT)")
    ref.append(contnode)
    return ref


def _default_matches(text, value):
    """Whether the Default cell ``text`` of the options table shows ``value``."""
    text = text.strip().strip("`")
    if value is None or isinstance(value, bool):
        return text == repr(value)
    if isinstance(value, str):
        return text.strip("\"'") == value
    try:
        return float(text) == float(value)
    except ValueError:
        return False


def check_options_documented(app, docname, source):
    """Warn about SNS options missing from the algorithm page's table, or
    shown there with a default that is not the code's."""
    if docname != "algorithm":
        return
    from dataclasses import fields

    from pot_sns import SNSOptions

    defaults = {f.name: f.default for f in fields(SNSOptions)}
    rows = dict(re.findall(r"^\s*\* - ``(\w+)``\s*\n\s*- (.+)$", source[0], flags=re.M))
    for name, value in defaults.items():
        if name not in rows:
            logger.warning("SNS option %r is not in the options table of "
                           "algorithm.rst", name, location=docname)
        elif not _default_matches(rows[name], value):
            logger.warning("algorithm.rst shows %s as the default of SNS option %r; "
                           "the code says %r", rows[name].strip(), name, value,
                           location=docname)
    # defaults quoted in the prose: ``name`` (default X...
    for name, text in re.findall(r"``(\w+)``\s+\(default\s+([^,)\s]+)", source[0]):
        if name in defaults and not _default_matches(text, defaults[name]):
            logger.warning("algorithm.rst says ``%s`` (default %s; the code says %r",
                           name, text, defaults[name], location=docname)
    for name in sorted(set(rows) - set(defaults)):
        logger.warning("algorithm.rst documents %r, which is not an SNS option",
                       name, location=docname)


def always_check_algorithm(app, env, added, changed, removed):
    # re-read the page on every build, so that the check also runs when only
    # the code changed
    return ["algorithm"] if "algorithm" in env.found_docs else []


def setup(app):
    app.connect("missing-reference", resolve_pot)
    app.connect("source-read", check_options_documented)
    app.connect("env-get-outdated", always_check_algorithm)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
