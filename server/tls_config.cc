#include "server/tls_config.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/server_credentials.h"
#include "server/secret_file.h"

namespace jetserve {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

BioPtr MemBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate in `pem`, in order. OpenSSL's error queue is cleared afterwards: the "no
// start line" that ends the loop is expected, and stale errors would confuse later calls.
std::vector<X509Ptr> ReadCertificates(const std::string& pem) {
  std::vector<X509Ptr> certs;
  BioPtr bio = MemBio(pem);
  while (bio != nullptr) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    certs.emplace_back(cert);
  }
  ERR_clear_error();
  return certs;
}

// OpenSSL's default would prompt for a passphrase on the terminal; a server must not.
int NoPassphrase(char*, int, int, void*) { return 0; }

PkeyPtr ReadPrivateKey(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  PkeyPtr key(bio == nullptr ? nullptr
                             : PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  return key;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsConfig>> LoadTlsConfig(const TlsFiles& files) {
  if (files.cert.empty() && files.key.empty()) {
    if (!files.client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls-client-ca needs --tls-cert and --tls-key: client certificates are only "
          "checked over TLS");
    }
    return nullptr;
  }
  if (files.cert.empty() || files.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both");
  }
  auto tls = std::make_unique<TlsConfig>();
  absl::StatusOr<std::string> cert = ReadSecretFile("tls-cert", files.cert);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadSecretFile("tls-key", files.key);
  if (!key.ok()) return key.status();
  const std::vector<X509Ptr> chain = ReadCertificates(*cert);
  if (chain.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-cert: ", files.cert, ": no PEM certificate in it"));
  }
  const PkeyPtr pkey = ReadPrivateKey(*key);
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key: ", files.key, ": no PEM private key in it (encrypted keys are not supported)"));
  }
  if (X509_check_private_key(chain.front().get(), pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key: ", files.key, ": not the key of the first certificate in ", files.cert));
  }
  tls->cert_chain_pem = *std::move(cert);
  tls->private_key_pem = *std::move(key);
  if (!files.client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadSecretFile("tls-client-ca", files.client_ca);
    if (!ca.ok()) return ca.status();
    if (ReadCertificates(*ca).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-client-ca: ", files.client_ca, ": no PEM certificate in it"));
    }
    tls->client_ca_pem = *std::move(ca);
  }
  return tls;
}

std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const TlsConfig* tls) {
  if (tls == nullptr) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      tls->mutual() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                    : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_root_certs = tls->client_ca_pem;
  options.pem_key_cert_pairs.push_back({tls->private_key_pem, tls->cert_chain_pem});
  return grpc::SslServerCredentials(options);
}

bool ConfigureServerSslContext(const TlsConfig& tls, SSL_CTX* ctx) {
  // TLS 1.0 and 1.1 are deprecated (RFC 8996); gRPC's port accepts 1.2 and later too.
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) return false;
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  const std::vector<X509Ptr> chain = ReadCertificates(tls.cert_chain_pem);
  const PkeyPtr key = ReadPrivateKey(tls.private_key_pem);
  if (chain.empty() || key == nullptr) return false;
  if (SSL_CTX_use_certificate(ctx, chain.front().get()) != 1) return false;
  for (size_t i = 1; i < chain.size(); ++i) {
    if (SSL_CTX_add1_chain_cert(ctx, chain[i].get()) != 1) return false;
  }
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    return false;
  }
  // Sessions resumed with verified peers need a context id, or OpenSSL refuses the resumption.
  static constexpr unsigned char kSessionContext[] = "jetserve";
  if (SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1) != 1) {
    return false;
  }
  if (tls.mutual()) {
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    for (const X509Ptr& ca : ReadCertificates(tls.client_ca_pem)) {
      // add_client_CA tells clients which CAs are accepted; the store is what verifies.
      if (X509_STORE_add_cert(store, ca.get()) != 1 || SSL_CTX_add_client_CA(ctx, ca.get()) != 1) {
        return false;
      }
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  ERR_clear_error();
  return true;
}

}  // namespace jetserve
