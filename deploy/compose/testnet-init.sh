#!/bin/sh
# testnet-init.sh OUT — makes the consortium of deploy/compose.yaml in OUT,
# once (a second run finds OUT/.done and does nothing):
#   OUT/node0 … OUT/node3   four validator homes (`edgeanchor ledger testnet`),
#                           rewritten for one container per validator: every
#                           node listens on 0.0.0.0 on the default ports (p2p
#                           26656, RPC 26657, Prometheus 26660) and dials its
#                           peers by service name (validatorK:26656);
#   OUT/gateway-a, gateway-b the two gateways' keys (gateway.pem, 0600), both
#                           admitted in the genesis app_state (sites site-a and
#                           site-b), so that they anchor from the first block;
#   OUT/keys                the dev committee (threshold 1) and regulator keys.
# Run by the `testnet` service (image target testnet-init, busybox sh) and by
# deploy's tests (EDGEANCHOR=path of a built binary, any POSIX sh).
set -eu

OUT=${1:?usage: testnet-init.sh OUT}
EA=${EDGEANCHOR:-edgeanchor}
CHAIN_ID=${CHAIN_ID:-edgeanchor-compose}
N=4

if [ -f "$OUT/.done" ]; then
	echo "testnet-init: $OUT is already made"
	exit 0
fi
if [ -e "$OUT/node0" ]; then
	echo "testnet-init: $OUT holds a partial testnet; remove it (docker compose down -v) and start again" >&2
	exit 1
fi
mkdir -p "$OUT"

"$EA" ledger testnet --validators "$N" --out "$OUT" --base-port 26656 --chain-id "$CHAIN_ID"

# The gateways: a key each, and their genesis entries.
entries=""
for gw in a b; do
	dir="$OUT/gateway-$gw"
	mkdir -p "$dir"
	"$EA" keygen --out "$dir/gateway.pem" >/dev/null
	did=$("$EA" did --pub "$dir/gateway.pub.pem")
	pub=$(grep -v -e '-----' "$dir/gateway.pub.pem" | tr -d '\n\r ')
	entry="{\"did\":\"$did\",\"pub\":\"$pub\",\"site\":\"site-$gw\",\"name\":\"compose gateway $gw\"}"
	entries="${entries:+$entries,}$entry"
done

k=0
while [ "$k" -lt "$N" ]; do
	home="$OUT/node$k"
	# One genesis for all: the same edit on every copy.
	sed -i "s|\"gateways\": \[\]|\"gateways\": [$entries]|" "$home/config/genesis.json"
	grep -q "\"site\":\"site-b\"" "$home/config/genesis.json" || {
		echo "testnet-init: could not add the gateways to $home/config/genesis.json" >&2
		exit 1
	}
	# Listeners: node k was made for 127.0.0.1 ports 26656+10k … 26658+10k.
	p2p=$((26656 + 10 * k))
	rpc=$((p2p + 1))
	prom=$((p2p + 2))
	conf="$home/config/config.toml"
	sed -i \
		-e "s|^laddr = \"tcp://127.0.0.1:$p2p\"|laddr = \"tcp://0.0.0.0:26656\"|" \
		-e "s|^laddr = \"tcp://127.0.0.1:$rpc\"|laddr = \"tcp://0.0.0.0:26657\"|" \
		-e "s|^prometheus_listen_addr = \"127.0.0.1:$prom\"|prometheus_listen_addr = \":26660\"|" \
		"$conf"
	# Peers: by service name.
	j=0
	while [ "$j" -lt "$N" ]; do
		sed -i -e "s|@127\.0\.0\.1:$((26656 + 10 * j))\([,\"]\)|@validator$j:26656\1|g" "$conf"
		j=$((j + 1))
	done
	k=$((k + 1))
done

# The daemons run as the distroless nonroot user.
if [ "$(id -u)" = 0 ]; then
	chown -R 65532:65532 "$OUT"
fi
chmod 0700 "$OUT"/node* "$OUT"/gateway-* "$OUT"/keys
touch "$OUT/.done"
echo "testnet-init: made $N validators and gateways site-a, site-b in $OUT"
