#!/usr/bin/env bash
# `make demo`: run edged for ~20 s on the embedded default configuration (synthetic street
# scene, one privacy mask), then show what it recorded and how to play it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${DEMO_SECONDS:-20}
data=edge-data
out=demo-out
mkdir -p "$out"

echo "demo: running edged for ${seconds}s on the embedded demo configuration (data in ./$data)"
.venv/bin/edged --run-for "$seconds" --data-dir "$data"

echo
echo "demo: recorded segments (privacy mask applied before encoding):"
find "$data/segments" -name 'seg-*.m4s' | sort | tail -n 5 | sed 's/^/  /'
count=$(find "$data/segments" -name 'seg-*.m4s' | wc -l)
echo "  ... $count segment(s) in all under $data/segments/"

for camdir in "$data"/segments/*/; do
    cam=$(basename "$camdir")
    clip="$out/$cam.mp4"
    # A CMAF init segment followed by its media segments is a playable fragmented MP4.
    { cat "$camdir/init.mp4"; find "$camdir" -name 'seg-*.m4s' | sort | xargs cat; } > "$clip"
    frames=$(ffprobe -v error -count_frames -select_streams v:0 \
        -show_entries stream=nb_read_frames -of csv=p=0 "$clip")
    echo
    echo "demo: $clip: $frames frames, checked by ffprobe. Play it with:"
    echo "  ffplay $clip        (or any player: mpv, VLC)"
done
