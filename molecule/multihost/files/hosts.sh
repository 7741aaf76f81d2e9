#!/bin/bash
# molecule/multihost: "hosts" on this machine as network namespaces.
#   hosts.sh up DIR    build them (DIR: the scenario's ephemeral directory)
#   hosts.sh down DIR  remove every namespace, process, link and file of `up`
#
# tmh-lan holds a bridge; tmh-exchange (10.200.0.10) and tmh-auditor
# (10.200.0.20) run an sshd each on their own address; tmh-intruder
# (10.200.0.30) only proves that another address is refused.  The controller
# (this root namespace) reaches them through the veth tmh-ctl (10.200.0.1).
# Only addresses in 10.200.0.0/24, all created here, are ever used.
set -euo pipefail

cmd=${1:?usage: hosts.sh up|down DIR}
DIR=${2:?usage: hosts.sh up|down DIR}
SSHDIR="$DIR/tmh-ssh"
declare -A ADDR=([exchange]=10.200.0.10 [auditor]=10.200.0.20 [intruder]=10.200.0.30)
SSH_HOSTS="exchange auditor"
# Ansible's ssh connections multiplex through these sockets (inventory group_vars/taler.yml).
CONTROL_PATH="/tmp/tmh-ssh-%C"

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
    [ -x /usr/sbin/sshd ] || { echo "hosts.sh: /usr/sbin/sshd missing (make sshd installs openssh-server)" >&2; exit 1; }
    command -v ip >/dev/null || { echo "hosts.sh: ip (iproute2) missing (make sshd installs it)" >&2; exit 1; }
    for ns in tmh-lan tmh-exchange tmh-auditor tmh-intruder; do
        if ns_exists "$ns"; then echo "hosts.sh: namespace $ns exists: run hosts.sh down first" >&2; exit 1; fi
    done
    if ip -br addr | grep -q ' 10\.200\.0\.'; then
        echo "hosts.sh: 10.200.0.0/24 is in use in the root namespace" >&2; exit 1
    fi
    mkdir -p "$SSHDIR"
    chmod 0700 "$DIR" "$SSHDIR"

    ip netns add tmh-lan
    ip -n tmh-lan link set lo up
    ip -n tmh-lan link add br0 type bridge
    ip -n tmh-lan link set br0 up
    for h in exchange auditor intruder; do
        ip netns add "tmh-$h"
        ip -n "tmh-$h" link set lo up
        ip -n tmh-lan link add "$h" type veth peer name eth0 netns "tmh-$h"
        ip -n tmh-lan link set "$h" master br0 up
        ip -n "tmh-$h" addr add "${ADDR[$h]}/24" dev eth0
        ip -n "tmh-$h" link set eth0 up
    done
    ip link add tmh-ctl type veth peer name ctl netns tmh-lan
    ip -n tmh-lan link set ctl master br0 up
    ip addr add 10.200.0.1/24 dev tmh-ctl
    ip link set tmh-ctl up

    # sshd's privilege-separation directory (Debian creates it only when its own sshd starts).
    if [ ! -d /run/sshd ]; then
        install -d -m 0755 /run/sshd
        touch "$SSHDIR/made-run-sshd"
    fi
    [ -f "$SSHDIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C tmh-controller -f "$SSHDIR/id_ed25519"
    cp "$SSHDIR/id_ed25519.pub" "$SSHDIR/authorized_keys"
    : > "$SSHDIR/known_hosts"
    for h in $SSH_HOSTS; do
        rm -f "$SSHDIR/host-$h" "$SSHDIR/host-$h.pub"
        ssh-keygen -q -t ed25519 -N '' -C "tmh-$h" -f "$SSHDIR/host-$h"
        # The controller knows every host key beforehand: strict checking stays on.
        echo "${ADDR[$h]} $(cut -d' ' -f1,2 "$SSHDIR/host-$h.pub")" >> "$SSHDIR/known_hosts"
        cat > "$SSHDIR/tmh-sshd-$h.conf" <<CONF
ListenAddress ${ADDR[$h]}:22
HostKey $SSHDIR/host-$h
PidFile $SSHDIR/sshd-$h.pid
AuthorizedKeysFile $SSHDIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
        ip netns exec "tmh-$h" /usr/sbin/sshd -f "$SSHDIR/tmh-sshd-$h.conf" -E "$SSHDIR/sshd-$h.log"
    done
    for h in $SSH_HOSTS; do
        for _ in $(seq 1 100); do
            ssh_to "$h" true 2>/dev/null && continue 2
            sleep 0.1
        done
        echo "hosts.sh: no ssh to $h (${ADDR[$h]}); see $SSHDIR/sshd-$h.log" >&2
        exit 1
    done
    echo "up: $(ip netns list | awk '/^tmh-/{print $1}' | sort | tr '\n' ' ')"
}

ssh_to() {
    local h=$1; shift
    ssh -o BatchMode=yes -o ConnectTimeout=2 -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$SSHDIR/known_hosts" \
        -o ControlPath=none -i "$SSHDIR/id_ed25519" "root@${ADDR[$h]}" "$@"
}

down() {
    # Ansible's multiplexing ssh masters end with their connections; ask them first.
    for h in $SSH_HOSTS; do
        ssh -o ControlPath="$CONTROL_PATH" -O exit "root@${ADDR[$h]}" 2>/dev/null || true
    done
    for ns in tmh-exchange tmh-auditor tmh-intruder tmh-lan; do
        ns_exists "$ns" || continue
        # Every process in the namespace (sshd, its sessions, servers left running): a namespace
        # with live processes would linger after `ip netns del`.
        pids=$(ip netns pids "$ns")
        if [ -n "$pids" ]; then
            kill -TERM $pids 2>/dev/null || true
            for _ in $(seq 1 50); do
                [ -z "$(ip netns pids "$ns")" ] && break
                sleep 0.1
            done
            pids=$(ip netns pids "$ns")
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
        ip netns del "$ns"
        echo "removed namespace $ns"
    done
    ! ip link show tmh-ctl >/dev/null 2>&1 || ip link del tmh-ctl
    if [ -f "$SSHDIR/made-run-sshd" ]; then
        rmdir /run/sshd 2>/dev/null || true
    fi
    rm -rf "$SSHDIR"
    rm -f /tmp/tmh-ssh-*
}

case $cmd in
    up) up ;;
    down) down ;;
    *) echo "usage: hosts.sh up|down DIR" >&2; exit 2 ;;
esac
