#!/usr/bin/env bash
# Makes a throwaway CA and the certificates for control plane <-> data plane
# mutual TLS: a server certificate for the control plane's gRPC listener and
# a client certificate for data planes. For trying mTLS out and for tests;
# use your own PKI in production.
#
# Usage: deploy/make-test-ca.sh DIR [CONTROL-PLANE-NAME ...]
#   DIR                  where ca.pem, cp.pem, cp.key, dp.pem, dp.key go (created)
#   CONTROL-PLANE-NAME   DNS names of the control plane (default: localhost portico-cp-grpc)
# Then:
#   portico-cp --grpc-tls-cert DIR/cp.pem --grpc-tls-key DIR/cp.key --grpc-client-ca DIR/ca.pem …
#   portico-dp --control-plane https://localhost:9090 --control-plane-ca DIR/ca.pem \
#              --control-plane-cert DIR/dp.pem --control-plane-key DIR/dp.key …
set -euo pipefail
dir=${1:?usage: deploy/make-test-ca.sh DIR [CONTROL-PLANE-NAME ...]}
shift
if [ $# -gt 0 ]; then names=("$@"); else names=(localhost portico-cp-grpc); fi
mkdir -p "$dir"
cd "$dir"
san=$(printf 'DNS:%s,' "${names[@]}"); san=${san%,}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=Portico test CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out "$1.pem" \
    -extfile <(printf '%s\n' "$3") 2>/dev/null
  rm -f "$1.csr"
}
issue cp "/CN=${names[0]}" "subjectAltName=$san
extendedKeyUsage=serverAuth"
issue dp "/CN=portico-dp" "subjectAltName=DNS:portico-dp
extendedKeyUsage=clientAuth"
rm -f ca.srl
chmod 600 ./*.key
echo "deploy/make-test-ca.sh: wrote $(pwd)/{ca.pem,ca.key,cp.pem,cp.key,dp.pem,dp.key} (control plane names: ${names[*]})"
