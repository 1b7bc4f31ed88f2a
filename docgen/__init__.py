"""The documentation site's machinery (not part of the installed worker).

``docgen.references`` writes the reference pages (configuration, topology, CLI, metrics)
from the code itself; ``docgen.hooks`` adds them to the MkDocs build (``mkdocs.yml``);
``docgen.examples`` checks the code blocks of README.md and docs/ (tests/docs).
"""
