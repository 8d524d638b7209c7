# Sphinx configuration of the pot_sns documentation.
#
# Built by ``tox -e docs`` as ``sphinx-build -W --keep-going -b html docs
# docs/_build/html``: warnings are errors and the gallery in ../examples is
# executed (scripts named ``plot_*.py``; the others are only rendered).
# Layout and conventions follow POT's own documentation: autosummary pages
# generated from numpydoc docstrings into ``gen_modules/`` and a
# sphinx-gallery gallery in ``auto_examples/``.

import os
import re
import sys
from datetime import date

import pot_sns

sys.path.insert(0, os.path.abspath("_ext"))

# -- Project -----------------------------------------------------------------

project = "pot_sns"
author = "pot_sns developers"
copyright = "%d, %s" % (date.today().year, author)
version = pot_sns.__version__
release = pot_sns.__version__

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "sns_docs",  # docs/_ext: links to POT's docs, gallery order
]

templates_path = ["_templates"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
pygments_style = "sphinx"

# No intersphinx: CI builds offline (only package registries are reachable).
# References to ``ot.*`` that Sphinx cannot resolve are linked to POT's
# online documentation by docs/_ext/sns_docs.py instead.

# -- autodoc / autosummary / numpydoc ---------------------------------------

autosummary_generate = True
autodoc_typehints = "none"
autodoc_member_order = "bysource"
add_module_names = False

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# Every documented public object must carry Parameters, Returns and
# Examples sections: a missing one fails the build (warnings are errors).
numpydoc_validation_checks = {"PR01", "PR02", "RT01", "EX01"}
numpydoc_validation_exclude = {r"\.__init__$", r"\.__repr__$"}

# -- sphinx-gallery ----------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": re.escape(os.sep) + "plot_",
    "within_subsection_order": "sns_docs.ExampleOrder",
    "backreferences_dir": os.path.join("gen_modules", "backreferences"),
    "doc_module": ("pot_sns",),
    "show_memory": False,
    # variables such as non-leaf torch tensors warn when inspected
    "inspect_global_variables": False,
    "remove_config_comments": True,
    "abort_on_example_error": False,
    "min_reported_time": 1,
    "write_computation_times": True,
}

# -- HTML --------------------------------------------------------------------

try:
    import sphinx_rtd_theme  # noqa: F401  (POT's theme; in the ``docs`` extra)

    html_theme = "sphinx_rtd_theme"
    html_theme_options = {"navigation_depth": 3}
except ImportError:  # a bare Sphinx install still builds
    html_theme = "alabaster"

html_title = "pot_sns %s" % release
htmlhelp_basename = "pot_snsdoc"
