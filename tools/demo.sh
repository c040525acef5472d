#!/usr/bin/env bash
# `make demo`: run edged for ~20 s on the embedded default configuration (synthetic street
# scene, one privacy mask), then show what it recorded and how to play it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${DEMO_SECONDS:-20}
data=edge-data
out=demo-out
mkdir -p "$out"

# A CSU receiver on loopback beside edged; the unit sends it its sealed segments (docs/UPLINK.md).
eval "$(.venv/bin/python -m edge.csu.demo_setup --data-dir "$data" --out "$out/csu")"
.venv/bin/edge-csu serve --config "$out/csu/csu.toml" --ports-file "$out/csu/ports.json" \
    >"$out/csu/serve.log" 2>&1 &
csu_pid=$!
trap 'kill "$csu_pid" 2>/dev/null || true' EXIT

echo "demo: running edged for ${seconds}s on the demo configuration (data in ./$data),"
echo "      sending to the CSU receiver on 127.0.0.1:$CSU_PORT"
.venv/bin/edged --run-for "$seconds" --config "$out/csu/edge.toml"
echo
echo "demo: what the CSU received and verified (edge-csu units):"
.venv/bin/edge-csu units --config "$out/csu/csu.toml"
echo "  operators watch with: edge-csu serve --config $out/csu/csu.toml, then"
echo "  ffplay -tls_verify 0 -headers 'Authorization: Bearer $CSU_TOKEN\r\n' \\"
echo "    https://127.0.0.1:OPERATORS_PORT/v1/view/$CSU_UNIT/cam1/live.m3u8"

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
