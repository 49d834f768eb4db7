#!/bin/sh
# Computes the SM3 Merkle golden vectors in sm3merkle.golden with OpenSSL and
# xxd only (no Go code involved):  sh sm3merkle.sh > sm3merkle.golden
# Leaf = SM3(0x00 ‖ data), node = SM3(0x01 ‖ left ‖ right) (RFC 6962 shape);
# the tree roots follow RFC 6962 §2.1 (split at the largest power of two < n),
# written out by hand below.
set -eu
h() { openssl dgst -sm3 -binary | xxd -p -c 256; }
leaf() { printf '00%s' "$1" | xxd -r -p | h; }
node() { printf '01%s%s' "$1" "$2" | xxd -r -p | h; }

echo "sm3_abc $(printf 'abc' | h)"
echo "empty_root $(printf '' | h)"
echo "leaf_empty $(leaf '')"
echo "leaf_abc $(leaf 616263)"
# HashChildren over the raw strings "N123" and "N456" (as rfc6962's test does).
echo "node_N123_N456 $(node 4e313233 4e343536)"
# Leaves of the one-byte data "0".."6" (0x30..0x36).
l0=$(leaf 30); l1=$(leaf 31); l2=$(leaf 32); l3=$(leaf 33)
l4=$(leaf 34); l5=$(leaf 35); l6=$(leaf 36)
n01=$(node "$l0" "$l1"); n23=$(node "$l2" "$l3"); n45=$(node "$l4" "$l5")
n0123=$(node "$n01" "$n23"); n456=$(node "$n45" "$l6")
echo "root_1 $l0"
echo "root_2 $n01"
echo "root_3 $(node "$n01" "$l2")"
echo "root_4 $n0123"
echo "root_5 $(node "$n0123" "$l4")"
echo "root_6 $(node "$n0123" "$n45")"
echo "root_7 $(node "$n0123" "$n456")"
# RFC 6962 PATH(2, D[0:7]) = l3, MTH(D[0:2]), MTH(D[4:7]).
echo "path_2_7 $l3,$n01,$n456"
# PATH(6, D[0:7]) = MTH(D[4:6]), MTH(D[0:4]).
echo "path_6_7 $n45,$n0123"
# A record leaf: salt 000102…0f followed by a receipt body.
body='{"type":"Receipt","v":1,"gateway":"did:ea:00112233445566778899aabbccddeeff","gseq":7,"did":"did:ea:ffeeddccbbaa99887766554433221100","seq":3,"recv":"2026-11-25T10:00:00Z","env":"66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"}'
echo "receipt_leaf $(leaf "000102030405060708090a0b0c0d0e0f$(printf '%s' "$body" | xxd -p -c 4096)")"
