// The server's TLS settings (`jetserve serve --tls-cert/--tls-key/--tls-client-ca`): PEM files
// read once at start-up and checked with OpenSSL before anything listens, so that a bad file is
// a clear start-up error rather than a handshake failure on the first connection. The gRPC port
// and the HTTP port are both configured from the same TlsConfig.
#ifndef JETSERVE_SERVER_TLS_CONFIG_H_
#define JETSERVE_SERVER_TLS_CONFIG_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX, kept out of this header

namespace jetserve {

struct TlsFiles {
  std::string cert;       // --tls-cert: the server's certificate chain, leaf first
  std::string key;        // --tls-key: the private key of the leaf certificate
  std::string client_ca;  // --tls-client-ca: CA certificates for client certificates (mTLS);
                          // empty: clients are not asked for a certificate
};

struct TlsConfig {
  std::string cert_chain_pem;
  std::string private_key_pem;
  std::string client_ca_pem;  // empty: no client certificates (plain TLS)

  bool mutual() const { return !client_ca_pem.empty(); }
};

// Reads and validates the files: each must hold PEM data of the right kind, and the key must
// belong to the leaf certificate. Errors name the flag and the path the operator gave (never
// the files' contents). Every path empty: TLS is off (nullptr). A key without a certificate (or
// the other way round), or a client CA without both, is an error.
absl::StatusOr<std::unique_ptr<TlsConfig>> LoadTlsConfig(const TlsFiles& files);

// gRPC's credentials for a listening port: TLS with `tls`, requiring and verifying a client
// certificate when it is mutual; plaintext for nullptr.
std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const TlsConfig* tls);

// Sets up an OpenSSL server context from `tls`: TLS 1.2 or later, the certificate chain and key,
// and for mutual TLS a required, verified client certificate. Returns false if OpenSSL refuses
// any of it (LoadTlsConfig has checked the same data, so only resource exhaustion remains).
bool ConfigureServerSslContext(const TlsConfig& tls, ssl_ctx_st* ctx);

}  // namespace jetserve

#endif  // JETSERVE_SERVER_TLS_CONFIG_H_
