"""Tags (标签): definitions with versions and a lifecycle, refreshed into tag values and
roaring bitmaps of their members.

``definition`` holds the data types, ``catalog`` stores definitions and moves them through their
lifecycle, ``refresh`` computes values (``compute``) and writes them with history, bitmaps and a
run record, ``dry_run`` and ``quality`` answer questions about one tag, ``service`` is what the
API and the CLI call. This package module imports nothing, so the store can read ``tables``
without loading the rule compiler.
"""
