package sim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/sim/profile"
)

// ErrNoToken means a device that has not enrolled yet found no unused token
// of its kind in the tokens file. Make more with `edgeanchor token create`
// and add them to the file.
var ErrNoToken = errors.New("sim: no unused enrollment token for this device kind")

// ErrState means a device's state directory holds something this package did
// not write (or a file was damaged). Move it aside or fix it; nothing was
// changed.
var ErrState = errors.New("sim: bad device state")

// deviceState is what a simulated device keeps in {state}/{name}/device.json
// next to its key (key.pem, 0600), its sequence counter (seq) and its spool.
type deviceState struct {
	Name     string     `json:"name"`
	Index    int        `json:"index"`
	DID      device.DID `json:"did"`
	Kind     string     `json:"kind"`
	Site     string     `json:"site"`
	Token    string     `json:"token,omitempty"` // the token this device enrolled (or is enrolling) with
	Enrolled bool       `json:"enrolled"`
}

// identity is a device's key, state and persistent sequence counter.
type identity struct {
	dir    string
	signer *device.KeySigner
	mu     sync.Mutex
	state  deviceState
	seq    uint64 // last sequence number assigned (persisted before use)
}

func deviceName(i int) string { return fmt.Sprintf("dev-%04d", i) }

// loadIdentity opens the device at dir, creating its key and state the first
// time.
func loadIdentity(dir string, index int, kind, site string) (*identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	keyPath := filepath.Join(dir, "key.pem")
	var signer *device.KeySigner
	if _, err := os.Stat(keyPath); os.IsNotExist(err) {
		priv, err := device.GenerateKey()
		if err != nil {
			return nil, err
		}
		if err := device.WritePrivateKeyFile(keyPath, priv); err != nil {
			return nil, err
		}
		signer = device.NewKeySigner(priv)
	} else {
		s, err := device.LoadKeySigner(keyPath)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrState, err)
		}
		signer = s
	}
	id := &identity{dir: dir, signer: signer}
	statePath := filepath.Join(dir, "device.json")
	b, err := os.ReadFile(statePath)
	switch {
	case os.IsNotExist(err):
		id.state = deviceState{Name: filepath.Base(dir), Index: index, DID: signer.DID(), Kind: kind, Site: site}
		if err := id.saveState(); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("sim: %w", err)
	default:
		if err := json.Unmarshal(b, &id.state); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrState, statePath, err)
		}
		if id.state.DID != signer.DID() {
			return nil, fmt.Errorf("%w: %s names %s but key.pem is %s", ErrState, statePath, id.state.DID, signer.DID())
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "seq")); err == nil {
		id.seq, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s/seq: %v", ErrState, dir, err)
		}
	}
	return id, nil
}

func (id *identity) saveState() error {
	b, err := json.MarshalIndent(id.state, "", "  ")
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return writeFileSync(filepath.Join(id.dir, "device.json"), append(b, '\n'), 0o600)
}

// nextSeq reserves the next sequence number and persists it before it is
// used, so a crash can skip a number but never reuse one.
func (id *identity) nextSeq() (uint64, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	next := id.seq + 1
	if err := writeFileSync(filepath.Join(id.dir, "seq"), []byte(strconv.FormatUint(next, 10)+"\n"), 0o600); err != nil {
		return 0, err
	}
	id.seq = next
	return next, nil
}

// reserveSeqs reserves n consecutive sequence numbers with one write and
// returns the first.
func (id *identity) reserveSeqs(n int) (uint64, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	first := id.seq + 1
	last := id.seq + uint64(n)
	if err := writeFileSync(filepath.Join(id.dir, "seq"), []byte(strconv.FormatUint(last, 10)+"\n"), 0o600); err != nil {
		return 0, err
	}
	id.seq = last
	return first, nil
}

func (id *identity) setEnrolled() error {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.state.Enrolled {
		return nil
	}
	id.state.Enrolled = true
	return id.saveState()
}

func (id *identity) enrolled() bool {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.state.Enrolled
}

// ---- tokens ----

var tokenPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Token is one enrollment token from a tokens file; Kind is "" when the file
// did not say which device kind it is for.
type Token struct {
	Value string
	Kind  string
}

// ReadTokens parses a tokens file: one token per line (64 lowercase hex
// digits, as `edgeanchor token create` prints them), optionally with the
// device kind it is for (payroll, survey or env) anywhere on the line and
// other words (site, expiry) ignored. A line holding only a device kind
// sets the kind of the token lines after it, so the outputs of several
// `token create --kind K` runs can be concatenated under headers. Blank
// lines and lines starting with # are skipped.
func ReadTokens(path string) ([]Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sim: tokens: %w", err)
	}
	defer f.Close()
	var out []Token
	sc := bufio.NewScanner(f)
	line := 0
	section := ""
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if text == profile.KindPayroll || text == profile.KindSurvey || text == profile.KindEnv {
			section = text
			continue
		}
		t := Token{Kind: section}
		for _, w := range strings.FieldsFunc(text, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' }) {
			w = strings.TrimPrefix(strings.TrimPrefix(w, "kind="), "token=")
			switch {
			case tokenPattern.MatchString(w):
				t.Value = w
			case w == profile.KindPayroll || w == profile.KindSurvey || w == profile.KindEnv:
				t.Kind = w
			}
		}
		if t.Value == "" {
			return nil, fmt.Errorf("sim: tokens %s:%d: no token (64 lowercase hex digits) on the line", path, line)
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sim: tokens: %w", err)
	}
	return out, nil
}

// planTokens picks, for each device state that has not enrolled and holds
// no token, the first unused token of its kind (or of no stated kind).
// Tokens already held by a device are never given to another. It returns
// the picks by position in states and changes nothing.
func planTokens(states []deviceState, tokens []Token) (map[int]string, error) {
	used := map[string]bool{}
	for _, st := range states {
		if st.Token != "" {
			used[st.Token] = true
		}
	}
	plan := map[int]string{}
	for i, st := range states {
		if st.Enrolled || st.Token != "" {
			continue
		}
		j := slices.IndexFunc(tokens, func(t Token) bool {
			return !used[t.Value] && (t.Kind == "" || t.Kind == st.Kind)
		})
		if j < 0 {
			return nil, fmt.Errorf("%w: %s (%s)", ErrNoToken, deviceName(st.Index), st.Kind)
		}
		used[tokens[j].Value] = true
		plan[i] = tokens[j].Value
	}
	return plan, nil
}

// assignTokens gives each device that has not enrolled and holds no token
// an unused token of its kind (planTokens) and saves the assignment before
// the device uses it. If some device finds no token, nothing is saved.
func assignTokens(ids []*identity, tokens []Token) error {
	states := make([]deviceState, len(ids))
	for i, id := range ids {
		states[i] = id.state
	}
	plan, err := planTokens(states, tokens)
	if err != nil {
		return err
	}
	for i, tok := range plan {
		id := ids[i]
		id.mu.Lock()
		id.state.Token = tok
		err := id.saveState()
		id.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// readStates reads the device states of a fleet as Open would make it,
// without writing: a device not made yet gets a fresh state of its kind.
func readStates(stateDir, fleetProfile string, devices int) ([]deviceState, error) {
	out := make([]deviceState, devices)
	for i := range devices {
		kind, err := profile.KindFor(fleetProfile, i)
		if err != nil {
			return nil, err
		}
		out[i] = deviceState{Name: deviceName(i), Index: i, Kind: kind}
		b, err := os.ReadFile(filepath.Join(stateDir, deviceName(i), "device.json"))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
		if err := json.Unmarshal(b, &out[i]); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrState, deviceName(i), err)
		}
	}
	return out, nil
}

// TokensNeeded counts, by device kind, the devices of a fleet (as Open
// would make it in stateDir) that have neither enrolled nor been given a
// token yet: the tokens a first start needs. It changes nothing on disk.
func TokensNeeded(stateDir, fleetProfile string, devices int) (map[string]int, error) {
	states, err := readStates(stateDir, fleetProfile, devices)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, st := range states {
		if !st.Enrolled && st.Token == "" {
			out[st.Kind]++
		}
	}
	return out, nil
}
