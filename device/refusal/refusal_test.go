package refusal

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var (
	backticked = regexp.MustCompile("`([a-z_]+)`")
	hexCode    = regexp.MustCompile(`\b0x([0-9A-Fa-f]{2})\b`)
)

// doc is a markdown file split into its sections: the heading line (without
// the #s) to its lines.
type doc map[string][]string

func readDoc(t *testing.T, name string) doc {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := doc{}
	section := ""
	fence := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if !fence && strings.HasPrefix(line, "#") {
			section = strings.TrimSpace(strings.TrimLeft(line, "#"))
			continue
		}
		d[section] = append(d[section], line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// docRow is one row of a documented refusal table: the reason names of its
// reason cell and the code of its code cell (-1 when the table has no code
// column or the cell holds no code).
type docRow struct {
	names []string
	code  int
	line  string
}

// table returns the rows of the first table in section whose header has a
// column named reasonCol.
func (d doc) table(t *testing.T, section, reasonCol string) []docRow {
	t.Helper()
	lines, ok := d[section]
	if !ok {
		t.Fatalf("section %q not found", section)
	}
	var rows []docRow
	ri, ci := -1, -1
	for _, line := range lines {
		if !strings.HasPrefix(line, "|") {
			if ri >= 0 {
				break // the end of the table
			}
			continue
		}
		cells := splitRow(line)
		if ri < 0 {
			ri = slices.Index(cells, reasonCol)
			ci = slices.IndexFunc(cells, func(c string) bool { return strings.Contains(c, "code") })
			if ri < 0 {
				continue
			}
			continue
		}
		if strings.HasPrefix(line, "| ---") {
			continue
		}
		r := docRow{code: -1, line: line}
		if strings.HasPrefix(cells[ri], "(") {
			rows = append(rows, r) // a remark such as "(no reason: …)"
			continue
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[ri], -1) {
			r.names = append(r.names, m[1])
		}
		if ci >= 0 && ci < len(cells) {
			if m := hexCode.FindStringSubmatch(cells[ci]); m != nil {
				c, _ := strconv.ParseUint(m[1], 16, 8)
				r.code = int(c)
			}
		}
		rows = append(rows, r)
	}
	if ri < 0 {
		t.Fatalf("section %q has no table with a %q column", section, reasonCol)
	}
	return rows
}

// splitRow splits a table row into its trimmed cells; "\|" is not a
// separator.
func splitRow(line string) []string {
	line = strings.ReplaceAll(line, `\|`, "\x00")
	parts := strings.Split(strings.Trim(line, "|"), "|")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(strings.ReplaceAll(p, "\x00", `|`))
	}
	return parts
}

// checkStage fails for a documented reason that is not in the code's table
// at stage, or whose documented code differs, and for a reason of the
// code's table that the rows do not document.
func checkStage(t *testing.T, where string, stage Stage, rows []docRow, wantCodes bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range rows {
		for _, name := range r.names {
			seen[name] = true
			want, ok := Lookup(stage, name)
			if !ok {
				t.Errorf("%s documents %s reason %q, which device/refusal does not have (row %q)", where, stage, name, r.line)
				continue
			}
			if wantCodes && r.code != int(want.Code) {
				t.Errorf("%s documents %s reason %q with code %#x, device/refusal has %#x (row %q)", where, stage, name, r.code, want.Code, r.line)
			}
		}
	}
	for _, name := range Names(stage) {
		if !seen[name] {
			t.Errorf("%s does not document the %s reason %q of device/refusal", where, stage, name)
		}
	}
}

// TestProtocolDocMatchesTable ties docs/protocol.md's refusal tables to the
// code's: every reason of every stage documented with its MQTT 5 code, and
// nothing documented that the code does not give.
func TestProtocolDocMatchesTable(t *testing.T) {
	d := readDoc(t, "protocol.md")
	checkStage(t, `protocol.md "Connecting a device"`, Connect, d.table(t, "Connecting a device", "reason"), true)
	checkStage(t, `protocol.md "Enrollment credential"`, Enroll, d.table(t, "Enrollment credential", "refusal reason"), true)
	checkStage(t, `protocol.md "Refusals"`, Publish, d.table(t, "Refusals", "reason"), true)

	// The admission refusals are cells of the connection limits table:
	// "… (v5 0x89, reason string `max_connections`; …)".
	admit := regexp.MustCompile("v5 0x([0-9A-Fa-f]{2}), reason string `([a-z_]+)`")
	var rows []docRow
	for _, line := range d["Connection limits"] {
		for _, m := range admit.FindAllStringSubmatch(line, -1) {
			c, _ := strconv.ParseUint(m[1], 16, 8)
			rows = append(rows, docRow{names: []string{m[2]}, code: int(c), line: line})
		}
	}
	checkStage(t, `protocol.md "Connection limits"`, Admit, rows, true)

	// The reasons a device may retry unchanged are those the late fills
	// section names.
	text := strings.Join(d["Late fills: retrying a refused reading"], " ")
	i := strings.Index(text, "retry (")
	if i < 0 {
		t.Fatal(`protocol.md "Late fills" lost its list "… it may retry (…)"`)
	}
	j := strings.Index(text[i:], ")")
	var retry []string
	for _, m := range backticked.FindAllStringSubmatch(text[i:i+j], -1) {
		retry = append(retry, m[1])
	}
	var want []string
	for _, r := range Table(Publish) {
		if r.Retry {
			want = append(want, r.Name)
		}
	}
	slices.Sort(retry)
	slices.Sort(want)
	if !slices.Equal(retry, want) {
		t.Errorf("protocol.md \"Late fills\" names %v as reasons to retry, device/refusal's Publish reasons with Retry are %v", retry, want)
	}
}

// TestOperationsDocMatchesTable: the operator's table of refusal reasons
// (docs/operations.md, EdgeanchorRefusalRatioHigh) covers every Publish
// reason and names no other; docs/internals.md's list of enrollment
// refusals names only Enroll reasons.
func TestOperationsDocMatchesTable(t *testing.T) {
	ops := readDoc(t, "operations.md")
	checkStage(t, `operations.md "EdgeanchorRefusalRatioHigh"`, Publish, ops.table(t, "EdgeanchorRefusalRatioHigh", "reason"), false)

	in := readDoc(t, "internals.md")
	var rows []docRow
	found := false
	for _, lines := range in {
		text := strings.Join(lines, "\n")
		i := strings.Index(text, "Refusal reasons: `token_unknown`")
		if i < 0 {
			continue
		}
		found = true
		end := strings.Index(text[i:], "\n\n")
		if end < 0 {
			end = len(text) - i
		}
		for _, m := range backticked.FindAllStringSubmatch(text[i:i+end], -1) {
			rows = append(rows, docRow{names: []string{m[1]}, line: m[0]})
		}
	}
	if !found {
		t.Fatal(`internals.md lost its list "Refusal reasons: ` + "`token_unknown`" + `…"`)
	}
	for _, r := range rows {
		if _, ok := Lookup(Enroll, r.names[0]); !ok {
			t.Errorf("internals.md lists enrollment refusal %q, which device/refusal's Enroll table does not have", r.names[0])
		}
	}
}

// The table itself: one row per (stage, name), a code that is a refusal
// (>= 0x80), a meaning.
func TestTableWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range table {
		key := r.Stage.String() + "/" + r.Name
		if seen[key] {
			t.Errorf("%s listed twice", key)
		}
		seen[key] = true
		if r.Code < 0x80 || r.Meaning == "" || r.Name == "" || r.Stage.String() == "unknown" {
			t.Errorf("row %+v", r)
		}
	}
	if got := Code(Publish, "no_such_reason"); got != CodeNotAuthorized {
		t.Errorf("Code of an unknown reason = %#x, want not authorized", got)
	}
}
