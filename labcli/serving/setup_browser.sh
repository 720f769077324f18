#!/bin/sh
# Install what the browser test of the translation apps needs from Debian, only when missing (idempotent):
#   chromium         headless Chromium (tests/recipes/serve/test_browser.py drives it)
#   chromium-driver  its WebDriver (selenium, from PyPI in the `test` extra, talks to it)
# No Devanagari font is installed on purpose: the apps ship their own (labcli/serving/apps/fonts/).
set -e
need=""
for pkg in chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -z "$need" ]; then
  echo "setup_browser: all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need
echo "setup_browser: installed$need"
