#!/usr/bin/env bash
# hosts.sh MOEC WORKDIR - two "hosts" on one machine: two network namespaces joined by a veth
# pair, each with its own host name (a UTS namespace), and mpirun starting the second host's
# processes through an rsh agent that enters its namespace instead of ssh. Open MPI then sees
# two nodes of 2 ranks: shared memory within a node, TCP over the veth pair between them. The
# expert-parallel model `ep4` of dp.moe (4 experts over 4 ranks, all-to-all `auto`) runs
# hierarchical there (2 ranks per node, from the hosts), flat on one host, and must reach the
# same losses, with the inter-node rows on the veth pair (its byte counters) and the
# hierarchical exchange's bytes in the log.
# Skipped (77) without mpirun, or where this user may not make network namespaces (not root,
# or a container without CAP_NET_ADMIN).
set -uo pipefail
moec=$1; work=$2
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "FAIL: $*"; exit 1; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
mkdir -p "$work" && cd "$work" || exit 1
tag=$$
ns1=moe$tag.1 ns2=moe$tag.2 v1=moev$tag.1 v2=moev$tag.2 net=10.$((tag % 200 + 50)).77
cleanup() { ip netns del "$ns1" 2>/dev/null; ip netns del "$ns2" 2>/dev/null; }
trap cleanup EXIT
{ ip netns add "$ns1" && ip netns add "$ns2"; } 2>/dev/null || { echo "SKIP: cannot make network namespaces"; exit 77; }
ip link add "$v1" type veth peer name "$v2" || fail "veth pair"
ip link set "$v1" netns "$ns1" && ip link set "$v2" netns "$ns2" || fail "veth into the namespaces"
for i in 1 2; do
  ns=moe$tag.$i
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip addr add "$net.$i/24" dev "moev$tag.$i"
  ip netns exec "$ns" ip link set "moev$tag.$i" up
done
# the agent mpirun runs instead of ssh: `agent HOST COMMAND...`
cat > agent.sh <<EOF
#!/bin/sh
host=\$1; shift
exec ip netns exec moe$tag.\${host##*.} unshare --uts sh -c "hostname moe-host\${host##*.}; \$*"
EOF
chmod +x agent.sh
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# (the agent is no ssh: every process inherits this environment)
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"     # Open MPI's plugins: see run.sh
"$moec" build "$here/dp.moe" --model ep4 -o ep4 -O1 2>/dev/null || fail "moec build ep4"
seq 1 20000 | awk '{ printf "%d squared is %d; ", $1, $1 * $1 }' | head -c 100000 > text.txt
# one host: 4 ranks, flat (the ranks on a host are one node)
timeout 120 mpirun --oversubscribe -np 4 --mca btl self,vader ./ep4 train --data text.txt --steps 3 --log one.jsonl \
  2> one.err || fail "one host: $(tail -3 one.err)"
tx() { ip netns exec "$ns1" cat "/sys/class/net/$v1/statistics/tx_bytes"; }
before=$(tx)
timeout 120 ip netns exec "$ns1" unshare --uts sh -c "hostname moe-host1; mpirun --oversubscribe -np 4 \
  --host $net.1:2,$net.2:2 --mca plm_rsh_agent $PWD/agent.sh --mca btl self,vader,tcp \
  --mca btl_tcp_if_include $net.0/24 --mca oob_tcp_if_include $net.0/24 \
  $PWD/ep4 train --data $PWD/text.txt --steps 3 --log $PWD/two.jsonl" > two.out 2>&1 \
  || fail "two hosts: $(tail -5 two.out)"
sent=$(( $(tx) - before ))
cmp -s <(jq -r .loss one.jsonl) <(jq -r .loss two.jsonl) \
  || fail "two hosts give other losses: $(paste <(jq -r .loss one.jsonl) <(jq -r .loss two.jsonl))"
jq -s -e 'length == 3 and all(.alltoall.messages == 15)' two.jsonl > /dev/null \
  || fail "all-to-all messages on two hosts: $(jq -c .alltoall two.jsonl)"
jq -s -e '.[0].alltoall.bytes != .[3].alltoall.bytes' one.jsonl two.jsonl > /dev/null \
  || fail "the two hosts' exchange moved the flat one's bytes: it was not hierarchical"
a2a=$(jq -s '[.[].alltoall.bytes] | add' two.jsonl)
[ "$sent" -gt 0 ] && [ "$sent" -gt "$((a2a / 4))" ] || fail "the veth pair carried $sent bytes (rank 0's exchanges: $a2a)"
echo "ok: ep4 on two hosts (hierarchical, $sent bytes over the veth pair from host 1) = one host (flat)"
