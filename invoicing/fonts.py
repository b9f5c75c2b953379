"""The Japanese font of the PDFs, cut down from the system's Noto Sans CJK.

Every PDF that uses Noto Sans CJK JP copies the 19 MB collection into memory and subsets it
(``pdf.css``): ~80 ms of a ~210 ms Japanese statement. ``pdf_fonts_build`` writes, once, a
font of the Japanese face with only the characters Japanese business documents use (~7,000:
JIS X 0208, kana, punctuation, Latin-1, full- and half-width forms), without hinting, which
PDFs do not need. ``documents`` declares it with ``@font-face`` when it is there; characters
outside it (a rare kanji in a company name) still come from the full font, glyph by glyph.

The glyphs that statements use most come first in the built font (``_put_first``): the
Latin-1 characters, those of the Japanese message catalog (the documents' labels), kana,
CJK punctuation and full-width forms. WeasyPrint embeds every glyph slot up to the highest
one a document uses, so a statement whose last glyph was the full-width yen sign near the
end of the font embedded ~7,300 slots per weight; with these ~1,000 first it embeds about a
seventh of that: PDFs half the size and ~10 ms faster. The order only changes speed and
size: any character of the font renders the same wherever its glyph is.

The files go to ``VAR_DIR/fonts`` (not committed: built from the installed font, whose
licence, the SIL OFL, allows modified copies under another name).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.conf import settings
from django.utils.translation import to_locale

SYSTEM_FONT_DIR = Path("/usr/share/fonts/opentype/noto")  # Debian's fonts-noto-cjk
SOURCE_FACE = "Noto Sans CJK JP"  # the face to take from the collection (name ID 1)
FAMILY = "Tollgate Noto Sans JP"  # the built font's name, so a PDF shows which one it used
WEIGHTS = ("Regular", "Bold")
# Part of the file names: raised when the build changes, so that fonts built before are
# built again rather than kept as up to date.
BUILD = 2
DROPPED_FEATURES = {"locl", "vert", "vrt2", "valt", "vhal", "vkrn", "vpal", "vchw"}

# Latin-1, General Punctuation, CJK Symbols and Punctuation, Hiragana, Katakana,
# Half-width and Full-width Forms; JIS X 0208 (kanji levels 1 and 2, and its symbols,
# Greek, Cyrillic and box drawing) is added from the EUC-JP codec in ``japanese_characters``.
RANGES = (
    (0x0020, 0x00FF),
    (0x2000, 0x206F),
    (0x3000, 0x303F),
    (0x3040, 0x309F),
    (0x30A0, 0x30FF),
    (0xFF00, 0xFFEF),
)


def font_dir() -> Path:
    return settings.VAR_DIR / "fonts"


def font_paths(directory: Path | None = None) -> dict[str, Path]:
    """The built font of each weight, by weight, whether it exists yet or not."""
    directory = font_dir() if directory is None else directory
    stem = FAMILY.replace(" ", "")
    return {weight: directory / f"{stem}-{weight}-{BUILD}.otf" for weight in WEIGHTS}


def japanese_characters() -> str:
    """The characters the built font keeps (~7,400)."""
    chars = {chr(cp) for first, last in RANGES for cp in range(first, last + 1)}
    for row in range(0xA1, 0xFF):  # JIS X 0208 rows 1-94 as EUC-JP lead bytes
        for cell in range(0xA1, 0xFF):
            try:
                chars.add(bytes((row, cell)).decode("euc_jp"))
            except UnicodeDecodeError:  # an unassigned code point
                continue
    return "".join(sorted(chars))


# Before the catalog's characters: Latin-1 (amounts, codes, addresses); after them: CJK
# punctuation, kana and full-width forms (the yen sign of Japanese amounts is U+FFE5).
FIRST_BEFORE_CATALOG = ((0x0020, 0x00FF),)
FIRST_AFTER_CATALOG = ((0x3000, 0x30FF), (0xFF00, 0xFFEF))


def catalog_characters(language: str = "ja") -> str:
    """The characters of the translated messages of ``language`` (its ``django.po``)."""
    from babel.messages.pofile import read_po

    path = Path(settings.LOCALE_PATHS[0]) / to_locale(language) / "LC_MESSAGES" / "django.po"
    if not path.exists():
        return ""
    with path.open("rb") as po:
        catalog = read_po(po)
    found = set()
    for message in catalog:
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for string in strings:
            found.update(string or "")
    return "".join(sorted(found))


def first_characters() -> str:
    """The characters whose glyphs the built font puts first, in that order."""

    def spans(ranges):
        return "".join(chr(cp) for first, last in ranges for cp in range(first, last + 1))

    return spans(FIRST_BEFORE_CATALOG) + catalog_characters() + spans(FIRST_AFTER_CATALOG)


def _put_first(font, characters: str) -> None:
    """Reorder the glyphs of ``font`` (CID-keyed CFF) so that those of ``characters`` come
    first, in that order, after .notdef. fontTools' ``reorderGlyphs`` renumbers the tables
    but not the CFF's FDSelect (which font dict, with its own local subroutines, each glyph
    uses): the charstrings are bound to their font dicts before, and FDSelect rewritten
    in the new order after."""
    from fontTools.ttLib.reorderGlyphs import reorderGlyphs

    top = font["CFF "].cff.topDictIndex[0]
    order = font.getGlyphOrder()
    font_dict_of = {name: top.FDSelect[gid] for gid, name in enumerate(order)}
    for name in order:
        top.CharStrings[name].decompile()  # reads with the glyph's own font dict
    cmap = font.getBestCmap()
    new_order = [order[0]]  # .notdef stays glyph 0
    placed = {order[0]}
    for character in characters:
        name = cmap.get(ord(character))
        if name is not None and name not in placed:
            placed.add(name)
            new_order.append(name)
    new_order += [name for name in order if name not in placed]
    reorderGlyphs(font, new_order)
    top.FDSelect.gidArray = [font_dict_of[name] for name in new_order]


def _source(weight: str) -> Path:
    return SYSTEM_FONT_DIR / f"NotoSansCJK-{weight}.ttc"


def _build_one(source: Path, target: Path, characters: str, weight: str) -> None:
    from fontTools import subset
    from fontTools.ttLib import TTCollection

    # Its INFO lines list every glyph kept (~100 kB), under a root logger at INFO.
    logging.getLogger("fontTools.subset").setLevel(logging.WARNING)

    collection = TTCollection(str(source), lazy=True)
    faces = [font for font in collection.fonts if font["name"].getDebugName(1) == SOURCE_FACE]
    if not faces:
        raise FileNotFoundError(f"{source} has no {SOURCE_FACE!r} face.")
    font = faces[0]
    options = subset.Options()
    options.hinting = False  # a PDF is not rasterised at small sizes on a screen
    # Horizontal Japanese only: vertical forms, and the Chinese and Korean glyphs that
    # 'locl' maps to, would double the glyphs kept (~15,000 instead of ~7,500).
    options.layout_features = [f for f in options.layout_features if f not in DROPPED_FEATURES]
    options.drop_tables += ["vhea", "vmtx", "VORG"]
    subsetter = subset.Subsetter(options)
    # Only what the face has (no warning for control or unassigned code points).
    subsetter.populate(text="".join(c for c in characters if ord(c) in font.getBestCmap()))
    subsetter.subset(font)
    _put_first(font, first_characters())
    # A modified font takes another name (OFL); it also tells the two fonts apart in a PDF.
    postscript = f"{FAMILY.replace(' ', '')}-{weight}"
    name = font["name"]
    for record in list(name.names):
        if record.nameID in (1, 16):
            name.setName(FAMILY, record.nameID, record.platformID, record.platEncID, record.langID)
        elif record.nameID == 4:
            name.setName(
                f"{FAMILY} {weight}", 4, record.platformID, record.platEncID, record.langID
            )
        elif record.nameID in (3, 6):
            name.setName(
                postscript, record.nameID, record.platformID, record.platEncID, record.langID
            )
    font["CFF "].cff.fontNames = [postscript]
    # Written beside the target and moved into place, so that a process starting to render
    # meanwhile never reads half a font.
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        font.save(str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def pdf_fonts_build(
    *, directory: Path | None = None, characters: str | None = None
) -> dict[Path, bool]:
    """Build the Regular and Bold fonts into ``directory`` (``VAR_DIR/fonts``) from the
    system's Noto Sans CJK collections. Idempotent: a file newer than its source is kept.
    Takes 10-20 s per weight for the full character set. Returns each file and whether it
    was built now. Raises ``FileNotFoundError`` when the system font is not installed."""
    targets = font_paths(directory)
    missing = [str(_source(weight)) for weight in WEIGHTS if not _source(weight).exists()]
    if missing:
        raise FileNotFoundError(
            f"The Noto Sans CJK font is not installed ({', '.join(missing)} missing): "
            "install the Debian package fonts-noto-cjk."
        )
    characters = japanese_characters() if characters is None else characters
    done = {}
    for weight, target in targets.items():
        source = _source(weight)
        if target.exists() and target.stat().st_mtime > source.stat().st_mtime:
            done[target] = False
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _build_one(source, target, characters, weight)
        done[target] = True
    return done
