#!/bin/sh
# ansible-setup.sh -- run by install-layer.sh (as SETUP_DIR/setup.sh) inside an
# ansible root (packaging/deb/rootfs.sh RELEASE ansible) where kvmnftd is NOT
# installed, with these files in the current folder:
#   role/          packaging/ansible, installed as the role `kvmnftd` where
#                  Debian's ansible looks for roles (/etc/ansible/roles)
#   site.yml       the playbook test/system/ansible.test.ts runs
#   kvmnftd.deb    the release's .deb, the role's kvmnftd_deb (Ansible runs
#                  in the container with a local connection: the controller's
#                  file is the host's)
set -eu
mkdir -p /etc/ansible/roles
cp -r role /etc/ansible/roles/kvmnftd
install -D -m 644 site.yml /root/ansible/site.yml
install -D -m 644 kvmnftd.deb /root/ansible/kvmnftd.deb
if dpkg-query -W kvmnftd >/dev/null 2>&1; then
  echo "ansible-setup.sh: kvmnftd is already installed" >&2
  exit 1
fi
echo "--- $(ansible-playbook --version | head -n 1), $(python3 --version)"
