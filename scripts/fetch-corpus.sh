#!/usr/bin/env bash
# Installs the tiny-corpus baseline's training corpus: the King James Version of the Bible (1611; public
# domain), from Debian's bible-kjv-text package (the text, in the Bible Retrieval System's
# compressed format) and bible-kjv (the `bible` program that decompresses it), pinned to 4.38
# and sha256-checked. Writes, under target/corpus/ (not tracked):
#   kjv.txt   one verse per line (verse numbers and chapter headings removed), UTF-8/ASCII
#   kjv.json  source, package versions and sha256s, licence, the text's sha256, size, lines
# Offline-capable: once the two .deb files are in target/corpus/debs/ (or kjv.txt is there
# with the pinned sha256), nothing is fetched. Needs apt-get (download only, no root) and
# dpkg-deb; the extracted `bible` binary needs libreadline8 (in Debian's base install).
# The train/validation split is not done here: `modelbench train` splits by line
# (every 50th verse to validation), so the split is the same for every reader of kjv.txt.
set -euo pipefail

VERSION=4.38
TEXT_DEB="bible-kjv-text_${VERSION}_all.deb"
TEXT_SHA=d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a
PROG_DEB="bible-kjv_${VERSION}_amd64.deb"
PROG_SHA=75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d
OUT_SHA=20d44b9349f5fb8f5d07abaf579f463c02587959e9d1b49757f0b7b9f6daaa3a

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${MODELBENCH_CORPUS_DIR:-$root/target/corpus}"
mkdir -p "$dir/debs"
out="$dir/kjv.txt"

if [ -f "$out" ] && [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$OUT_SHA" ] && [ -f "$dir/kjv.json" ]; then
    echo "corpus already installed: $out (sha256 $OUT_SHA)"
    exit 0
fi

fetch() { # deb-file package sha
    local f="$dir/debs/$1"
    if [ ! -f "$f" ] || [ "$(sha256sum "$f" | cut -d' ' -f1)" != "$3" ]; then
        (cd "$dir/debs" && apt-get download -q "$2=$VERSION") >&2 || {
            echo "error: could not download $2=$VERSION with apt-get (run 'apt-get update' first, or put $1 in $dir/debs/)" >&2
            exit 2
        }
    fi
    local got
    got="$(sha256sum "$f" | cut -d' ' -f1)"
    if [ "$got" != "$3" ]; then
        echo "error: $f has sha256 $got, expected $3 (delete it and run again)" >&2
        exit 2
    fi
}
fetch "$TEXT_DEB" bible-kjv-text "$TEXT_SHA"
fetch "$PROG_DEB" bible-kjv "$PROG_SHA"

pkg="$dir/pkg"
rm -rf "$pkg"
mkdir -p "$pkg"
dpkg-deb -x "$dir/debs/$TEXT_DEB" "$pkg"
dpkg-deb -x "$dir/debs/$PROG_DEB" "$pkg"

tmp="$out.tmp"
# Every verse from Genesis 1:1 to Revelation 22:21 on one line each; keep only the verse
# lines ("  <n> <text>") and drop the number.
"$pkg/usr/bin/bible" -l 100000 -p "$pkg/usr/lib" 'Gen1:1-Rev22:21' |
    sed -n 's/^ *[0-9][0-9]* \(.*[^ ]\) *$/\1/p' >"$tmp"
got="$(sha256sum "$tmp" | cut -d' ' -f1)"
if [ "$got" != "$OUT_SHA" ]; then
    echo "error: extracted text has sha256 $got, expected $OUT_SHA" >&2
    rm -f "$tmp"
    exit 2
fi
mv "$tmp" "$out"
bytes=$(wc -c <"$out")
lines=$(wc -l <"$out")
cat >"$dir/kjv.json" <<JSON
{
  "name": "kjv",
  "title": "The Holy Bible, King James Version (1611)",
  "path": "$out",
  "sha256": "$OUT_SHA",
  "bytes": $bytes,
  "lines": $lines,
  "format": "one verse per line, verse numbers and chapter headings removed, ASCII",
  "source": "Debian bookworm packages bible-kjv-text $VERSION (text) and bible-kjv $VERSION (the 'bible' program that decompresses it)",
  "debs": {"$TEXT_DEB": "$TEXT_SHA", "$PROG_DEB": "$PROG_SHA"},
  "licence": "text: public domain (the package's copyright file: 'The copyright for the King James Version text of the Bible is expired'); packaging and program: GPL-2+",
  "split": "by line: every 50th line (index % 50 == 49) is validation, the rest train (modelbench train)",
  "tokenization": "bytes (vocab 256): the text is ASCII, so a byte is a character, as in the spec's char-level BMRK-01 run"
}
JSON
echo "wrote $out ($bytes bytes, $lines lines, sha256 $OUT_SHA) and $dir/kjv.json"
