#!/usr/bin/env bash
# `make demo`: run edged for ~20 s on the embedded default configuration (synthetic street
# scene, its windows masked), then show what it recorded and how to play it.
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
ops_port=$(sed -n 's/.*"operators": \([0-9]*\).*/\1/p' "$out/csu/ports.json")
live="https://127.0.0.1:$ops_port/v1/view/$CSU_UNIT/cam1/live.m3u8"
echo "demo: an operator opens the live playlist (decrypted in memory at the CSU, audited):"
# Readers in these pipelines read to the end (sed -n '1…p', not head): under pipefail a reader
# that exits early kills the writer with SIGPIPE and fails the demo at random (Error 141).
ffprobe -v error -tls_verify 0 -headers "Authorization: Bearer $CSU_TOKEN"$'\r\n' \
    -show_entries stream=codec_name,width,height -of csv=p=0 "$live" | sed -n '1s/^/  /p'
tail -n 1 "$out/csu/audit.jsonl" | sed 's/^/  audit: /'
echo "  to watch: keep 'edge-csu serve --config $out/csu/csu.toml' running and play"
echo "  $live with ffplay -tls_verify 0 -headers \"Authorization: Bearer $CSU_TOKEN\""

echo
echo "demo: sealed segments in the vault (masked, encrypted to the CSU key, signed, chained):"
find "$data/vault/segments" -name '*.seg' | sort | tail -n 3 | sed 's/^/  /'
echo "  ... $(find "$data/vault/segments" -name '*.seg' | wc -l) segment(s) in all; the unit cannot read them"
echo
echo "demo: edgectl verify (signatures and hash chain, no key needed):"
.venv/bin/edgectl verify --config "$out/csu/edge.toml" | sed 's/^/  /'

echo
echo "demo: exporting the last 10 s as an evidence bundle, opened with the CSU key and"
echo "      verified with the city's root certificate alone (the bundle carries the unit's"
echo "      evidence-signing certificate and the CA chain):"
rm -rf "$out/bundle"
.venv/bin/edgectl export --config "$out/csu/edge.toml" --last 10s --case DEMO-0001 \
    --out "$out/bundle" | sed 's/^/  /'
.venv/bin/edge-csu open "$out/bundle" --key "$out/csu/keys/authority.key.json" \
    --ca "$out/csu/ca/root.crt" --crl "$out/csu/ca/crl.pem" --out "$out/demo.mp4" | sed 's/^/  /'
frames=$(ffprobe -v error -count_frames -select_streams v:0 \
    -show_entries stream=nb_read_frames -of csv=p=0 "$out/demo.mp4")
echo
echo "demo: $out/demo.mp4: $frames frames, checked by ffprobe. Play it with:"
echo "  ffplay $out/demo.mp4        (or any player: mpv, VLC)"
echo "  the audit log recorded the export: edgectl audit --config $out/csu/edge.toml --tail 3"

echo
echo "demo: the operators' console (live wall, playback, alerts, units, audit log), French by"
echo "      default; start the receiver again and open it in a browser (the demo's certificate"
echo "      is its own CA's: accept it, or import $out/csu/ca/root.crt):"
echo "  .venv/bin/edge-csu serve --config $out/csu/csu.toml"
echo "  console:  $CSU_CONSOLE"
echo "  login:    $CSU_LOGIN    password: $CSU_PASSWORD"
echo "  code:     .venv/bin/python -m edge.csu.demo_setup --code $out/csu   (the authenticator's"
echo "            6 digits; or add $(sed -n 's/.* //p' "$out/csu/console-login") to an app)"
