package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
)

// DataDirInfoFile names the small file a gateway writes in its data directory
// at every start: which gateway and site the directory belongs to. Tools that
// take --data-dir (`edgeanchor token`) read it to refuse a directory that
// holds no gateway (a mistyped path) and to default --site to the gateway's.
const DataDirInfoFile = "gateway.json"

// DataDirInfo is the content of DataDirInfoFile.
type DataDirInfo struct {
	V       int        `json:"v"`
	Gateway device.DID `json:"gateway"`
	Site    string     `json:"site"`
}

// ErrNoGateway means a directory given as a gateway's data directory holds
// none of what a gateway keeps there: the path is probably mistyped, or the
// gateway has never started. Check the path or give the gateway's --config.
var ErrNoGateway = errors.New("gateway: not a gateway data directory")

// writeDataDirInfo records in dir which gateway and site it belongs to.
func writeDataDirInfo(dir string, did device.DID, site string) error {
	b, err := json.MarshalIndent(DataDirInfo{V: 1, Gateway: did, Site: site}, "", " ")
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return identity.WriteFileAtomic(filepath.Join(dir, DataDirInfoFile), append(b, '\n'), 0o600)
}

// CheckDataDir tells whether dir is a gateway's data directory: it must hold
// DataDirInfoFile, the record store (records/) or a token store. It returns
// the directory's DataDirInfo when DataDirInfoFile is there (zero otherwise)
// and an error wrapping ErrNoGateway that names what is missing.
func CheckDataDir(dir string) (DataDirInfo, error) {
	var info DataDirInfo
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return info, fmt.Errorf("%w: %s does not exist", ErrNoGateway, dir)
	case err != nil:
		return info, fmt.Errorf("gateway: data dir: %w", err)
	case !st.IsDir():
		return info, fmt.Errorf("%w: %s is not a directory", ErrNoGateway, dir)
	}
	raw, err := os.ReadFile(filepath.Join(dir, DataDirInfoFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(raw, &info); err != nil || info.V != 1 {
			return DataDirInfo{}, fmt.Errorf("gateway: %s is corrupt (delete it; the gateway rewrites it at start)", filepath.Join(dir, DataDirInfoFile))
		}
		return info, nil
	case !errors.Is(err, os.ErrNotExist):
		return info, fmt.Errorf("gateway: data dir: %w", err)
	}
	for _, name := range []string{"records", identity.TokenFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return info, nil
		}
	}
	return info, fmt.Errorf("%w: %s holds no %s, records/ or %s (a gateway writes them when it starts)",
		ErrNoGateway, dir, DataDirInfoFile, identity.TokenFile)
}
