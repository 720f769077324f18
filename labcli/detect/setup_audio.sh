#!/bin/sh
# Install what `lab detect deepfake-voice` needs from Debian, only when missing (idempotent):
#   asterisk-core-sounds-en-wav  real studio speech prompts (CC BY-SA 3.0), /usr/share/asterisk/sounds/en
#   asterisk-core-sounds-en      their transcripts (core-sounds-en.txt)
#   espeak-ng                    the text-to-speech "easy" fake
#   codec2                       c2enc/c2dec, the Codec 2 speech-codec fake
set -e
need=""
for pkg in asterisk-core-sounds-en-wav asterisk-core-sounds-en espeak-ng codec2; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -z "$need" ]; then
  echo "setup_audio: all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need
echo "setup_audio: installed$need"
