package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger"
)

// The walkthrough of docs/operations.md, "Forming a consortium", is run by
// TestOperationsWalkthrough exactly as written; the conventions the test
// applies are described at the end of that section.

const walkthroughSection = "## Forming a consortium"

// wtHosts are the walkthrough's hosts and wtPorts the ports the doc writes;
// each (host, port) pair becomes a free loopback port of its own.
var (
	wtHosts = []string{"org-a", "org-b", "org-c", "org-d", "org-e", "site-1"}
	wtPorts = []int{26656, 26657, 26660, 1883, 8480}
)

// wtBlock is one ```sh block of the walkthrough.
type wtBlock struct {
	id      string
	hosts   []string
	service bool
	script  string
	sends   []wtSend
	output  []string // the lines of its ```text output block, if any
	line    int
}

// wtSend is a "# → send FILE to HOST [as NAME]" line.
type wtSend struct{ file, to, as string }

var (
	wtFence   = regexp.MustCompile("^```([a-z]+)(.*)$")
	wtAttr    = regexp.MustCompile(`([a-z]+)="([^"]*)"`)
	wtSendRe  = regexp.MustCompile(`^# → send (\S+) to (\S+)(?: as (\S+))?$`)
	wtAddrRe  = regexp.MustCompile(`(?:([a-z0-9-]+)\.example|127\.0\.0\.1|0\.0\.0\.0):(\d+)|--(?:p2p|rpc|prometheus)-port (\d+)`)
	wtSpaceRe = regexp.MustCompile(`\s+`)
)

// readWalkthrough parses the section's ```sh and ```text output blocks.
func readWalkthrough(t *testing.T) []*wtBlock {
	t.Helper()
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n"+walkthroughSection+"\n")
	if start < 0 {
		t.Fatalf("docs/operations.md has no section %q", walkthroughSection)
	}
	sec := doc[start+1:]
	if end := strings.Index(sec[len(walkthroughSection):], "\n## "); end >= 0 {
		sec = sec[:len(walkthroughSection)+end]
	}
	firstLine := strings.Count(doc[:start+1], "\n") + 1
	var blocks []*wtBlock
	byID := map[string]*wtBlock{}
	var cur *wtBlock
	var curOut *[]string
	in := false
	sc := bufio.NewScanner(strings.NewReader(sec))
	for n := firstLine; sc.Scan(); n++ {
		line := sc.Text()
		if !in {
			m := wtFence.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			in = true
			attrs := map[string]string{}
			for _, a := range wtAttr.FindAllStringSubmatch(m[2], -1) {
				attrs[a[1]] = a[2]
			}
			switch {
			case m[1] == "sh":
				blk := &wtBlock{id: attrs["id"], hosts: strings.Fields(attrs["host"]), service: attrs["run"] == "service", line: n}
				if blk.id == "" || len(blk.hosts) == 0 || byID[blk.id] != nil {
					t.Fatalf("docs/operations.md:%d: a walkthrough block needs a unique id and a host: %s", n, line)
				}
				for _, h := range blk.hosts {
					if !slices.Contains(wtHosts, h) {
						t.Fatalf("docs/operations.md:%d: unknown host %q", n, h)
					}
				}
				blocks, byID[blk.id], cur = append(blocks, blk), blk, blk
			case m[1] == "text" && attrs["output"] != "":
				blk := byID[attrs["output"]]
				if blk == nil || blk.output != nil {
					t.Fatalf("docs/operations.md:%d: output of %q, which is not a block above (or has one already)", n, attrs["output"])
				}
				blk.output = []string{}
				curOut, cur = &blk.output, nil
			default:
				t.Fatalf("docs/operations.md:%d: the walkthrough has only ```sh blocks and ```text output blocks: %s", n, line)
			}
			continue
		}
		if line == "```" {
			in, cur, curOut = false, nil, nil
			continue
		}
		if cur != nil {
			cur.script += line + "\n"
			if m := wtSendRe.FindStringSubmatch(line); m != nil {
				s := wtSend{file: m[1], to: m[2], as: m[3]}
				if s.as == "" {
					s.as = filepath.Base(s.file)
				}
				if !slices.Contains(wtHosts, s.to) {
					t.Fatalf("docs/operations.md:%d: send to unknown host %q", n, s.to)
				}
				cur.sends = append(cur.sends, s)
			} else if strings.HasPrefix(line, "# →") {
				t.Fatalf("docs/operations.md:%d: not a send line (# → send FILE to HOST [as NAME]): %s", n, line)
			}
		} else if curOut != nil && strings.TrimSpace(line) != "" {
			*curOut = append(*curOut, line)
		}
	}
	if in {
		t.Fatal("docs/operations.md: an unclosed block in the walkthrough")
	}
	return blocks
}

// wtSite is the one machine the walkthrough's hosts share.
type wtSite struct {
	t        *testing.T
	dir      string
	ports    map[string]int // "org-b:26657" → free port
	back     map[int]string // free port → "org-b.example:26657"
	path     string
	services map[string]*testutil.Process // "id@host"
	sent     []string                     // every file that travelled
}

func (s *wtSite) port(host string, p int) int {
	n, ok := s.ports[host+":"+strconv.Itoa(p)]
	if !ok {
		s.t.Fatalf("walkthrough: port %d of %s is not one the test maps (%v)", p, host, wtPorts)
	}
	return n
}

func (s *wtSite) rpc(host string) string {
	return "http://127.0.0.1:" + strconv.Itoa(s.port(host, 26657))
}

func (s *wtSite) hostDir(host string) string { return filepath.Join(s.dir, host) }

// substitute makes a block run on one machine: host names and 0.0.0.0
// become 127.0.0.1 and every port its host's free port.
func (s *wtSite) substitute(script, host string) string {
	out := wtAddrRe.ReplaceAllStringFunc(script, func(m string) string {
		sm := wtAddrRe.FindStringSubmatch(m)
		if sm[3] != "" {
			p, _ := strconv.Atoi(sm[3])
			return strings.TrimSuffix(m, sm[3]) + strconv.Itoa(s.port(host, p))
		}
		h := host
		if sm[1] != "" {
			h = sm[1]
			if !slices.Contains(wtHosts, h) {
				s.t.Fatalf("walkthrough: unknown host %s.example", h)
			}
		}
		p, _ := strconv.Atoi(sm[2])
		return "127.0.0.1:" + strconv.Itoa(s.port(h, p))
	})
	out = strings.ReplaceAll(out, "0.0.0.0", "127.0.0.1")
	if strings.Contains(out, ".example") {
		s.t.Fatalf("walkthrough: a host name without a port is left in:\n%s", out)
	}
	return out
}

// unsubstitute writes the test's addresses back as the doc's.
func (s *wtSite) unsubstitute(out string) string {
	return regexp.MustCompile(`127\.0\.0\.1:(\d+)`).ReplaceAllStringFunc(out, func(m string) string {
		p, _ := strconv.Atoi(strings.TrimPrefix(m, "127.0.0.1:"))
		if d, ok := s.back[p]; ok {
			return d
		}
		return m
	})
}

// run runs the block on host and returns what it printed.
func (s *wtSite) run(blk *wtBlock, host string) string {
	s.t.Helper()
	script := s.substitute(blk.script, host)
	dir := s.hostDir(host)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.t.Fatal(err)
	}
	if blk.service {
		var cmdLines []string
		for _, l := range strings.Split(strings.ReplaceAll(script, "\\\n", " "), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				cmdLines = append(cmdLines, l)
			}
		}
		if len(cmdLines) != 1 {
			s.t.Fatalf("docs/operations.md:%d: a service block holds one command, not %d", blk.line, len(cmdLines))
		}
		cmd := exec.Command("bash", "-c", "exec "+cmdLines[0])
		cmd.Dir, cmd.Env = dir, s.env()
		s.services[blk.id+"@"+host] = testutil.StartProcess(s.t, cmd)
		return ""
	}
	ctx, cancel := context.WithTimeout(s.t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir, cmd.Env = dir, s.env()
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("docs/operations.md:%d: block %s on %s: %v\n%s\n--- output\n%s%s", blk.line, blk.id, host, err, script, out.String(), s.serviceTails())
	}
	text := s.unsubstitute(out.String())
	if err := matchSample(blk.output, text); err != nil {
		s.t.Fatalf("docs/operations.md:%d: block %s on %s printed what its output block does not show: %v\n--- output\n%s", blk.line, blk.id, host, err, text)
	}
	for _, snd := range blk.sends {
		b, err := os.ReadFile(filepath.Join(dir, snd.file))
		if err != nil {
			s.t.Fatalf("block %s on %s: send: %v", blk.id, host, err)
		}
		to := filepath.Join(s.hostDir(snd.to), snd.as)
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			s.t.Fatal(err)
		}
		s.sent = append(s.sent, to)
	}
	return text
}

func (s *wtSite) env() []string {
	return append(os.Environ(), "PATH="+s.path+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// serviceTails is the end of every service's output, for a failure.
func (s *wtSite) serviceTails() string {
	var b strings.Builder
	for name, p := range s.services {
		out := p.Output.String()
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		fmt.Fprintf(&b, "\n--- %s (last lines)\n%s", name, out)
	}
	return b.String()
}

// matchSample checks that each sample line, "…" standing for any text and
// runs of blanks for one, is a line of out, in order.
func matchSample(sample []string, out string) error {
	norm := func(s string) string { return strings.TrimSpace(wtSpaceRe.ReplaceAllString(s, " ")) }
	lines := strings.Split(out, "\n")
	j := 0
	for _, want := range sample {
		parts := strings.Split(norm(want), "…")
		found := false
		for ; j < len(lines) && !found; j++ {
			found = matchParts(parts, norm(lines[j]))
		}
		if !found {
			return fmt.Errorf("no line %q (in order)", want)
		}
	}
	return nil
}

func matchParts(parts []string, line string) bool {
	if !strings.HasPrefix(line, parts[0]) {
		return false
	}
	rest := line[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(rest, p)
		}
		k := strings.Index(rest, p)
		if k < 0 {
			return false
		}
		rest = rest[k+len(p):]
	}
	return rest == ""
}

// TestOperationsWalkthrough runs docs/operations.md "Forming a consortium"
// on one machine: five organisations' homes and a site, each in its own
// directory with its own ports, files passed only as the doc's send lines
// say. Between blocks it waits for what the doc says happens and checks it
// by its own means.
func TestOperationsWalkthrough(t *testing.T) {
	blocks := readWalkthrough(t)
	edgeanchor := testbin.Path(t, "./cmd/edgeanchor")
	if filepath.Dir(testbin.Path(t, "./firmware-sim")) != filepath.Dir(edgeanchor) {
		t.Fatal("testbin builds the two binaries into different directories")
	}
	s := &wtSite{t: t, dir: t.TempDir(), ports: map[string]int{}, back: map[int]string{},
		path: filepath.Dir(edgeanchor), services: map[string]*testutil.Process{}}
	free := testutil.StablePorts(t, len(wtHosts)*len(wtPorts))
	for i, h := range wtHosts {
		for k, p := range wtPorts {
			n := free[i*len(wtPorts)+k]
			s.ports[h+":"+strconv.Itoa(p)] = n
			s.back[n] = h + ".example:" + strconv.Itoa(p)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(s.serviceTails())
		}
	})
	ctx := t.Context()
	clients := map[string]*ledgerclient.Client{}
	client := func(host string) *ledgerclient.Client {
		if c := clients[host]; c != nil {
			return c
		}
		c, err := ledgerclient.NewClient(s.rpc(host), ledgerclient.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[host] = c
		return c
	}
	comet := func(host string) *rpchttp.HTTP {
		c, err := rpchttp.New(s.rpc(host), "/websocket")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const long = 3 * time.Minute // bound of every wait; the doc's events come in seconds
	waitHeight := func(host string, h int64) {
		c := client(host)
		testutil.WaitFor(t, long, fmt.Sprintf("%s at height %d", host, h), func() error {
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if st.Height < h || st.CatchingUp {
				return fmt.Errorf("height %d, catching up %v", st.Height, st.CatchingUp)
			}
			return nil
		})
	}
	height := func(host string) int64 {
		h, err := client(host).Height(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	validatorAddr := func(host string) string {
		m, err := ledger.ReadMemberFile(filepath.Join(s.hostDir(host), "ledger", ledger.MemberFileName))
		if err != nil {
			t.Fatal(err)
		}
		return ed25519.PubKey(m.Validator.PubKey).Address().String()
	}
	readID := func(host, notice string) anchor.Hash {
		b, err := os.ReadFile(filepath.Join(s.hostDir(host), notice))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^proposal ([0-9a-f]{64}) `).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s on %s names no proposal:\n%s", notice, host, b)
		}
		id, err := anchor.ParseHash(string(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	gatewayDID := func() device.DID {
		pub, err := device.ReadPublicKeyFile(filepath.Join(s.hostDir("site-1"), "gateway-key.pub.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return device.DIDFromPublicKey(pub)
	}
	isMember := func() bool {
		g, err := client("org-a").Gateway(ctx, gatewayDID())
		if errors.Is(err, ledgerclient.ErrNotFound) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return g.Status == "member"
	}
	siteHTTP := func(path string) string {
		return "http://127.0.0.1:" + strconv.Itoa(s.port("site-1", 8480)) + path
	}
	lastGSeq := func() uint64 {
		b, err := testutil.HTTPGet(siteHTTP("/v1/records?from_gseq=1&to_gseq=1"))
		if err != nil {
			t.Fatal(err)
		}
		var ans struct {
			LastGSeq uint64 `json:"last_gseq"`
		}
		if err := json.Unmarshal(b, &ans); err != nil {
			t.Fatalf("records: %v: %s", err, b)
		}
		return ans.LastGSeq
	}
	waitProof := func(gseq uint64) {
		testutil.WaitFor(t, long, fmt.Sprintf("record %d anchored", gseq), func() error {
			resp, err := http.Get(siteHTTP(fmt.Sprintf("/v1/records/%d/proof", gseq)))
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("proof: %s", resp.Status)
			}
			return nil
		})
	}
	revokedRefusals := func() (float64, error) {
		b, err := testutil.HTTPGet(siteHTTP("/metrics"))
		if err != nil {
			return 0, err
		}
		m := regexp.MustCompile(`(?m)^edgeanchor_auth_failures_total\{reason="revoked"\} (\S+)$`).FindSubmatch(b)
		if m == nil {
			return 0, errors.New("no edgeanchor_auth_failures_total{reason=\"revoked\"}")
		}
		return strconv.ParseFloat(string(m[1]), 64)
	}
	var genesisHash, revokedDID, gatewayKeyDID string
	consortiumLists := map[string]string{} // final-check's consortium list, by host
	var changedAt int64                    // first height signed by the new validator set
	genesisHashOf := func(out string) string {
		m := regexp.MustCompile(`(?m)^sha256\s+([0-9a-f]{64})$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no sha256 line in:\n%s", out)
		}
		return m[1]
	}
	cometSet := func(host string, h *int64) map[string]bool {
		res, err := comet(host).Validators(ctx, h, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		set := map[string]bool{}
		for _, v := range res.Validators {
			set[v.Address.String()] = true
		}
		return set
	}

	// Waits before a block (what a reader waits for by looking) and checks
	// after it (what the doc says happened), by block id.
	before := map[string]func(){
		"check-chain": func() {
			for _, h := range []string{"org-a", "org-b", "org-c", "org-d"} {
				waitHeight(h, 3)
			}
			testutil.WaitFor(t, long, "org-b connected to the three others", func() error {
				ni, err := comet("org-b").NetInfo(ctx)
				if err == nil && ni.NPeers != 3 {
					err = fmt.Errorf("%d peers", ni.NPeers)
				}
				return err
			})
		},
		"tokens": func() {
			testutil.WaitFor(t, long, "the gateway ready", func() error {
				resp, err := http.Get(siteHTTP("/readyz"))
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return errors.New(resp.Status)
				}
				return nil
			})
		},
		"verify-first": func() { waitProof(1) },
		"refused": func() {
			testutil.WaitFor(t, long, "a CONNECT of the revoked device refused", func() error {
				n, err := revokedRefusals()
				if err == nil && n < 1 {
					err = errors.New("none yet")
				}
				return err
			})
		},
		"propose-validators": func() { waitHeight("org-e", height("org-a")) },
		"check-e": func() {
			want := map[string]bool{validatorAddr("org-a"): true, validatorAddr("org-b"): true, validatorAddr("org-c"): true, validatorAddr("org-e"): true}
			c := client("org-a")
			testutil.WaitFor(t, long, "the chain signed by the new validator set, org-e's validator among the signers", func() error {
				h, err := c.Height(ctx)
				if err != nil {
					return err
				}
				if set := cometSet("org-a", &h); !mapsEqual(set, want) {
					return fmt.Errorf("validators at %d: %v", h, set)
				}
				res, err := comet("org-a").Commit(ctx, &h)
				if err != nil {
					return err
				}
				for _, sig := range res.Commit.Signatures {
					if sig.BlockIDFlag == types.BlockIDFlagCommit && sig.ValidatorAddress.String() == validatorAddr("org-e") {
						return nil
					}
				}
				return fmt.Errorf("org-e did not sign block %d", h)
			})
			// The first height of the new set.
			lo, hi := int64(1), height("org-a")
			for lo < hi {
				mid := (lo + hi) / 2
				if mapsEqual(cometSet("org-a", &mid), want) {
					hi = mid
				} else {
					lo = mid + 1
				}
			}
			changedAt = lo
			// org-d stops its node, as the doc says; the chain goes on.
			if err := s.services["start-d@org-d"].Stop(syscall.SIGINT, time.Minute); err != nil {
				t.Fatalf("org-d's validator did not stop: %v", err)
			}
			waitHeight("org-a", height("org-a")+3)
		},
		"verify-both": func() { waitProof(lastGSeq()) },
	}
	after := map[string]func(host, out string){
		"assemble": func(_, out string) { genesisHash = genesisHashOf(out) },
		"install-a": func(_, out string) {
			if h := genesisHashOf(out); h != genesisHash {
				t.Fatalf("org-a's genesis hash %s, assembled %s", h, genesisHash)
			}
		},
		"install-bcd": func(host, out string) {
			if h := genesisHashOf(out); h != genesisHash {
				t.Fatalf("%s's genesis hash %s, assembled %s", host, h, genesisHash)
			}
		},
		"install-e": func(_, out string) {
			if h := genesisHashOf(out); h != genesisHash {
				t.Fatalf("org-e's genesis hash %s, assembled %s", h, genesisHash)
			}
		},
		"gateway-key": func(_, out string) {
			gatewayKeyDID = regexp.MustCompile(`(?m)^did:ea:[0-9a-f]{32}$`).FindString(out)
			if gatewayKeyDID != string(gatewayDID()) {
				t.Fatalf("keygen printed %q, the key's DID is %s", gatewayKeyDID, gatewayDID())
			}
		},
		"propose-gateway": func(_, out string) {
			// The DID org-b reads out on the phone is the one the site's keygen printed.
			if first, _, _ := strings.Cut(out, "\n"); first != gatewayKeyDID {
				t.Fatalf("org-b's did --pub printed %q, the site's keygen %q", first, gatewayKeyDID)
			}
		},
		"approve-offline": func(_, _ string) {
			p, err := client("org-a").Proposal(ctx, readID("org-c", "add-site-1.txt"))
			if err != nil || len(p.Approvals) != 1 {
				t.Fatalf("after the offline signature the proposal has approvals %v (%v), want the proposer's alone", p, err)
			}
		},
		"submit-offline": func(_, _ string) {
			p, err := client("org-a").Proposal(ctx, readID("org-d", "add-site-1.txt"))
			if err != nil || len(p.Approvals) != 2 || p.Status != "open" {
				t.Fatalf("after two approvals: %+v (%v), want open with 2", p, err)
			}
			if isMember() {
				t.Fatal("two approvals of three admitted the gateway")
			}
		},
		"approve-d": func(_, _ string) {
			if !isMember() {
				t.Fatal("the third approval did not admit the gateway")
			}
		},
		"verify-first": func(_, out string) {
			if !strings.Contains(out, "OK: record") {
				t.Fatalf("verify:\n%s", out)
			}
		},
		"revoke": func(_, _ string) {
			b, err := os.ReadFile(filepath.Join(s.hostDir("site-1"), "sim", "dev-0000", "device.json"))
			if err != nil {
				t.Fatal(err)
			}
			revokedDID = regexp.MustCompile(`did:ea:[0-9a-f]{32}`).FindString(string(b))
			d, err := client("org-c").Device(ctx, device.DID(revokedDID))
			if err != nil || d.Status != "revoked" {
				t.Fatalf("device %s on the ledger: %+v (%v)", revokedDID, d, err)
			}
		},
		"refused": func(_, _ string) {
			// The other device goes on: a record stored after the refusal is not the revoked device's.
			from := lastGSeq()
			testutil.WaitFor(t, long, "a new record of the device not revoked", func() error {
				n := lastGSeq()
				if n <= from {
					return fmt.Errorf("last gseq %d", n)
				}
				b, err := testutil.HTTPGet(siteHTTP(fmt.Sprintf("/v1/records?from_gseq=%d&to_gseq=%d", from+1, n)))
				if err != nil {
					return err
				}
				if bytes.Contains(b, []byte(revokedDID)) {
					t.Fatalf("a record of the revoked device was stored after its refusal: %s", b)
				}
				return nil
			})
		},
		"approve-validators": func(host, _ string) {
			if host != "org-c" {
				return
			}
			vals, err := client("org-a").Validators(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range vals {
				got = append(got, v.Address)
			}
			want := []string{validatorAddr("org-a"), validatorAddr("org-b"), validatorAddr("org-c"), validatorAddr("org-e")}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("the application's validators %v, want a, b, c and e %v", got, want)
			}
		},
		"final-check": func(host, out string) {
			list, _, ok := strings.Cut(out, "\nDID ")
			if !ok {
				t.Fatalf("final check on %s: no gateway list:\n%s", host, out)
			}
			consortiumLists[host] = list
			for h, l := range consortiumLists {
				if l != list {
					t.Fatalf("the consortium as %s's node has it:\n%s\ndiffers from %s's:\n%s", host, list, h, l)
				}
			}
		},
		"verify-both": func(_, out string) {
			if strings.Count(out, "OK: record") != 2 {
				t.Fatalf("verify:\n%s", out)
			}
			for _, c := range []struct {
				file  string
				after bool
			}{{"record-1.json", false}, {"record-new.json", true}} {
				b, err := evidence.ReadBundleFile(filepath.Join(s.hostDir("org-a"), c.file))
				if err != nil {
					t.Fatal(err)
				}
				if h := b.Anchor.Height; (h >= changedAt) != c.after {
					t.Fatalf("%s anchored at height %d; the new set signs from %d: want it %s", c.file, h, changedAt, map[bool]string{true: "after", false: "before"}[c.after])
				}
				_, v := b.Anchor.Validators.GetByAddress(ed25519.PubKey(mustMemberKey(t, s, "org-e")).Address())
				if inSet := v != nil; inSet != c.after {
					t.Fatalf("%s: org-e's validator in the set that signed it: %v", c.file, inSet)
				}
			}
		},
	}
	seen := map[string]bool{}
	for _, blk := range blocks {
		seen[blk.id] = true
		if f := before[blk.id]; f != nil {
			f()
		}
		for _, host := range blk.hosts {
			out := s.run(blk, host)
			if f := after[blk.id]; f != nil {
				f(host, out)
			}
		}
	}
	for id := range before {
		if !seen[id] {
			t.Errorf("the walkthrough has no block %q that the test waits before", id)
		}
	}
	for id := range after {
		if !seen[id] {
			t.Errorf("the walkthrough has no block %q that the test checks after", id)
		}
	}
	if _, ok := s.services["start-d@org-d"]; !ok {
		t.Error("the walkthrough starts no validator start-d on org-d")
	}
	if len(consortiumLists) != 4 {
		t.Errorf("the final check ran on %d members, want the 4 validators' organisations", len(consortiumLists))
	}
	checkSentFiles(t, s)
}

func mustMemberKey(t *testing.T, s *wtSite, host string) []byte {
	m, err := ledger.ReadMemberFile(filepath.Join(s.hostDir(host), "ledger", ledger.MemberFileName))
	if err != nil {
		t.Fatal(err)
	}
	return m.Validator.PubKey
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// checkSentFiles: every file that travelled is public (a member file, a
// genesis, a public key, a signed tx or a printed notice) and holds no byte
// of any private key made on any host.
func checkSentFiles(t *testing.T, s *wtSite) {
	t.Helper()
	var secrets []string
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		switch {
		case name == "priv_validator_key.json" || name == "node_key.json":
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			var k struct {
				PrivKey struct {
					Value string `json:"value"`
				} `json:"priv_key"`
			}
			if err := json.Unmarshal(b, &k); err != nil || len(k.PrivKey.Value) < 40 {
				return fmt.Errorf("%s: %v", p, err)
			}
			secrets = append(secrets, k.PrivKey.Value[:40])
		case strings.HasSuffix(name, ".pem") && !strings.HasSuffix(name, ".pub.pem"):
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if !bytes.Contains(b, []byte("PRIVATE KEY")) {
				return nil
			}
			for _, line := range strings.Split(string(b), "\n") {
				if len(line) > 20 && !strings.HasPrefix(line, "-----") {
					secrets = append(secrets, line)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) < 5*4 {
		t.Fatalf("found only %d private key lines on the hosts", len(secrets))
	}
	if len(s.sent) == 0 {
		t.Fatal("no file travelled")
	}
	for _, f := range s.sent {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, sec := range secrets {
			if bytes.Contains(b, []byte(sec)) {
				t.Fatalf("%s, sent to another host, holds private key material", f)
			}
		}
		_, errMember := ledger.ReadMemberFile(f)
		_, errGenesis := types.GenesisDocFromJSON(b)
		_, errPub := device.ReadPublicKeyFile(f)
		_, errTx := anchor.DecodeTx(bytes.TrimSpace(b))
		notice := strings.HasSuffix(f, ".txt") && !bytes.Contains(b, []byte("PRIVATE"))
		if errMember != nil && errGenesis != nil && errPub != nil && errTx != nil && !notice {
			t.Fatalf("%s travelled but is no member file, genesis, public key, signed tx or printed notice", f)
		}
	}
}
