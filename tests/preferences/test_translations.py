"""The Japanese catalog: the committed .mo matches the .po, and the page's strings are in it.

CI has no gettext tools, so the compiled .mo is committed; this catches a .po edited
without recompiling (``msgfmt --check -o django.mo django.po``).
"""

from __future__ import annotations

import ast
import gettext
from pathlib import Path

from django.conf import settings

CATALOG = Path(settings.BASE_DIR) / "locale" / "ja" / "LC_MESSAGES"


def _read_po(path: Path) -> dict[str, str]:
    """msgid -> msgstr of the translated, non-fuzzy entries (enough of the format for ours).

    An entry with a context is keyed as gettext keys it: ``context + "\x04" + msgid``.
    """
    entries: dict[str, str] = {}
    msgid = msgstr = None
    target = None
    fuzzy = False
    context = ""

    def flush():
        if msgid and msgstr and not fuzzy:
            entries[f"{context}\x04{msgid}" if context else msgid] = msgstr

    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("#,"):
            fuzzy = "fuzzy" in line
        elif line.startswith("msgctxt "):
            context = ast.literal_eval(line[8:])
        elif line.startswith("msgid "):
            msgid, msgstr, target = ast.literal_eval(line[6:]), "", "id"
        elif line.startswith("msgstr "):
            msgstr, target = ast.literal_eval(line[7:]), "str"
        elif line.startswith('"') and target == "id":
            msgid += ast.literal_eval(line)
        elif line.startswith('"') and target == "str":
            msgstr += ast.literal_eval(line)
        elif not line.strip():
            flush()
            msgid = msgstr = target = None
            fuzzy = False
            context = ""
    return entries


def test_the_compiled_catalog_matches_its_source():
    source = _read_po(CATALOG / "django.po")
    with (CATALOG / "django.mo").open("rb") as f:
        compiled = gettext.GNUTranslations(f)

    assert len(source) > 80
    stale = {k: v for k, v in source.items() if compiled.gettext(k) != v}
    assert stale == {}
    assert compiled.info()["plural-forms"] == "nplurals=1; plural=0;"
