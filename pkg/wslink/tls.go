package wslink

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
)

// maxCAFile bounds a --ca-file read; real bundles are a few hundred KiB.
const maxCAFile = 4 << 20

// TLSConfigFromCAFile returns a TLS configuration that verifies servers
// against the system roots plus the PEM certificates in path, for servers
// behind a private CA (--ca-file).
func TLSConfigFromCAFile(path string) (*tls.Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wslink: CA file: %w", err)
	}
	defer f.Close()
	pem, err := io.ReadAll(io.LimitReader(f, maxCAFile+1))
	if err != nil {
		return nil, fmt.Errorf("wslink: CA file: %w", err)
	}
	if len(pem) > maxCAFile {
		return nil, fmt.Errorf("wslink: CA file %s is larger than %d bytes", path, maxCAFile)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		// No system store (some minimal containers): trust the file alone.
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("wslink: no PEM certificates in CA file %s", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
