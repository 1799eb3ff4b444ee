# Sourced by the comparison scripts. Each starts its servers on fixed
# ports, and a server left from an earlier run on one of them would be
# measured instead, or share the port: refuse to start beside one.
#
#   refuse_taken_ports "how to move them" PORT...
refuse_taken_ports() {
  local hint=$1 port; shift
  command -v ss >/dev/null || return 0
  for port in "$@"; do
    if [ -n "$(ss -Hltun "sport = :$port")" ]; then
      echo "port $port is taken: another server would be measured ($hint)" >&2
      exit 1
    fi
  done
}
