#!/usr/bin/env bash
# Installs the Debian packages needed by serve.py (the GStreamer RTSP test
# server).  Idempotent: prints nothing and touches nothing when all packages
# are already present; runs `apt-get update` only if something is missing.
set -euo pipefail

pkgs=(
  python3-gi                    # gi.repository for /usr/bin/python3
  gir1.2-gst-rtsp-server-1.0    # GstRtspServer typelib (pulls libgstrtspserver)
  gstreamer1.0-plugins-base     # videoconvert, videotestsrc, typefind, ...
  gstreamer1.0-plugins-good     # qtdemux, rtph264pay, rtph265pay, rtpmanager
  gstreamer1.0-plugins-bad      # h264parse, h265parse, x265enc
  gstreamer1.0-plugins-ugly     # x264enc
  gstreamer1.0-libav            # avdec_h264
  gstreamer1.0-tools            # gst-launch-1.0 / gst-inspect-1.0 (handy for debugging)
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' \
    || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Final sanity check: the system Python can load the RTSP server bindings.
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")'
