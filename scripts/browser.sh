#!/usr/bin/env bash
# Install (if needed) what the console tests drive: Debian's Chromium and a CJK font for 中文.
# Playwright (a pip dev dependency) drives /usr/bin/chromium; it never downloads a browser.
set -euo pipefail
if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "WenQuanYi Micro Hei"; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Chromium or the CJK font is missing and we are not root: apt-get install chromium fonts-wqy-microhei" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
