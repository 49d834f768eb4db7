#!/bin/sh
# A device made with the openssl CLI alone (docs/protocol.md, "A device with
# openssl"): key, DID, enrollment credential, connect credential and one
# signed env.dust envelope. Used by gateway/interop_test.go with
# mosquitto_pub; every step is plain POSIX sh + OpenSSL 3.
#
#   DIR=out SITE=site-a KIND=env TOKEN=<from edgeanchor token create> SEQ=1 sh openssl-device.sh
#
# Writes in $DIR: dev.key (0600), did, enroll.pw (if TOKEN is set),
# connect.pw, envelope.json.
set -eu
: "${DIR:?}" "${SITE:=site-a}" "${KIND:=env}" "${SEQ:=1}"
cd "$DIR"
sign() { # sign FILE -> base64 DER SM2-SM3 signature (GM/T 0009 default ID)
  openssl pkeyutl -sign -inkey dev.key -rawin -digest sm3 \
    -pkeyopt distid:1234567812345678 -in "$1" | openssl base64 -A
}

# 1. Key and DID: did:ea: + first 16 bytes (hex) of SM3 over the 65-byte
#    uncompressed point, which ends the SubjectPublicKeyInfo DER.
if [ ! -f dev.key ]; then
  (umask 077; openssl genpkey -algorithm SM2 -out dev.key)
fi
openssl pkey -in dev.key -pubout -outform DER -out pub.der
DID="did:ea:$(tail -c 65 pub.der | openssl dgst -sm3 -r | cut -c1-32)"
printf '%s' "$DID" > did
PUB=$(openssl base64 -A -in pub.der)
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# 2. Enrollment credential: ea1-enroll.{token}.{b64 registration}.{b64 sig}
if [ -n "${TOKEN:-}" ]; then
  printf '{"type":"DeviceRegistration","v":1,"did":"%s","pub":"%s","kind":"%s","site":"%s","ts":"%s","nonce":"%s"}' \
    "$DID" "$PUB" "$KIND" "$SITE" "$NOW" "$(openssl rand -hex 16)" > reg.json
  printf 'ea1-enroll.%s.%s.%s' "$TOKEN" "$(openssl base64 -A -in reg.json)" "$(sign reg.json)" > enroll.pw
fi

# 3. Connect credential: ea1.{unix}.{nonce}.{b64 sig over
#    "edgeanchor-connect-v1\n{did}\n{unix}\n{nonce}"}
UNIX=$(date -u +%s)
NONCE=$(openssl rand -hex 16)
printf 'edgeanchor-connect-v1\n%s\n%s\n%s' "$DID" "$UNIX" "$NONCE" > connect.msg
printf 'ea1.%s.%s.%s' "$UNIX" "$NONCE" "$(sign connect.msg)" > connect.pw

# 4. Envelope: the signature covers the exact body bytes, carried in base64.
printf '{"did":"%s","seq":%s,"ts":"%s","kind":"env.dust","data":{"pm25_ugm3":12.5,"pm10_ugm3":30,"noise_dba":55}}' \
  "$DID" "$SEQ" "$NOW" > body.json
printf '{"v":1,"alg":"SM2-SM3","body":"%s","sig":"%s"}' \
  "$(openssl base64 -A -in body.json)" "$(sign body.json)" > envelope.json
