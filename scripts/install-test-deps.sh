#!/usr/bin/env bash
# Installs the real SQL Server clients the end-to-end tests drive: FreeTDS (tsql) from Debian,
# and python-tds, pymssql and Microsoft's ODBC Driver 18 (through mssql-python) from PyPI into
# .venv/ at the repository root. Safe to run again; needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(freetds-bin libltdl7)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check \
  'python-tds==1.17.*' 'pymssql==2.4.*' 'mssql-python==1.16.*' 'pyOpenSSL>=24'
echo "test dependencies ready: $(command -v tsql), $(.venv/bin/python --version)"
