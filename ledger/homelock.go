package ledger

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// HomeLockFile is the file in a ledger home that a running node holds an
// exclusive flock on, with its process ID inside.
const HomeLockFile = "node.lock"

// ErrRunning means another node (in this or another process) is already
// running from the home. Stop it before starting the home again; two nodes
// on one home would sign with one validator key.
var ErrRunning = errors.New("ledger: the node of this home is already running")

// lockHome takes the home's lock for this process, or returns ErrRunning
// naming the process that holds it. The lock is released by closing the
// returned file (or by the process ending, however it ends).
func lockHome(home string) (*os.File, error) {
	path := filepath.Join(home, HomeLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ledger: home lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			b := make([]byte, 32)
			n, _ := f.ReadAt(b, 0)
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b[:n]))); perr == nil && pid > 0 {
				return nil, fmt.Errorf("%w: %s (pid %d); stop it first", ErrRunning, home, pid)
			}
			return nil, fmt.Errorf("%w: %s; stop it first", ErrRunning, home)
		}
		return nil, fmt.Errorf("ledger: home lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
