package gateway

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The configuration's keys are its YAML tags, nested with dots
// ("mqtt.tcp", "store.group_linger"). The functions below walk Config by
// reflection so that the flag table of `edgeanchor gateway`, the error
// messages of LoadConfig and the documentation tests all speak of keys, and
// a key added to Config is covered by each of them without a second list.

// ConfigKeys returns the key of every scalar field of Config (strings,
// numbers, durations, booleans), in declaration order. Lists of structures
// (accounts) are not scalars and are left out.
func ConfigKeys() []string {
	var keys []string
	walkConfigType(reflect.TypeOf(Config{}), "", func(key string, _ reflect.StructField) {
		keys = append(keys, key)
	})
	return keys
}

// ConfigField returns the field of cfg that key names, settable, or false
// when Config has no scalar field of that key.
func ConfigField(cfg *Config, key string) (reflect.Value, bool) {
	v := reflect.ValueOf(cfg).Elem()
	for _, part := range strings.Split(key, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		i := yamlFieldIndex(v.Type(), part)
		if i < 0 {
			return reflect.Value{}, false
		}
		v = v.Field(i)
	}
	if v.Kind() == reflect.Struct || v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
		return reflect.Value{}, false
	}
	return v, true
}

func walkConfigType(t reflect.Type, prefix string, fn func(key string, f reflect.StructField)) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		switch f.Type.Kind() {
		case reflect.Struct:
			walkConfigType(f.Type, prefix+name+".", fn)
		case reflect.Slice, reflect.Map:
		default:
			fn(prefix+name, f)
		}
	}
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

func yamlFieldIndex(t reflect.Type, name string) int {
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == name {
			return i
		}
	}
	return -1
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkConfigNode walks a decoded YAML document alongside the type it will
// be decoded into and returns the first unknown key or ill-typed value,
// named by its key path and line ("line 6: unknown key mqtt.tpc (did you
// mean mqtt.tcp?)"), instead of the decoder's Go type names.
func checkConfigNode(n *yaml.Node, t reflect.Type, prefix string) error {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkConfigNode(c, t, prefix); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return checkConfigNode(n.Alias, t, prefix)
	}
	where := strings.TrimSuffix(prefix, ".")
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: %s must be a mapping of keys (indented under %s:)", n.Line, where, where)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			fi := yamlFieldIndex(t, k.Value)
			if fi < 0 {
				msg := fmt.Sprintf("line %d: unknown key %s", k.Line, printableKey(prefix+k.Value))
				if near := closestKey(k.Value, t); near != "" {
					msg += fmt.Sprintf(" (did you mean %s?)", prefix+near)
				}
				return fmt.Errorf("%s", msg)
			}
			if err := checkConfigNode(v, t.Field(fi).Type, prefix+k.Value+"."); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("line %d: %s must be a list", n.Line, where)
		}
		for i, c := range n.Content {
			if err := checkConfigNode(c, t.Elem(), fmt.Sprintf("%s[%d].", where, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: %s must be a single value, not a list or mapping", n.Line, where)
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return fmt.Errorf("line %d: %s: %q is not %s", n.Line, where, n.Value, typeWant(t))
	}
	return nil
}

// typeWant says in words what a value of type t is written as.
func typeWant(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration: write durations with a unit, e.g. 5s, 250ms, 2m or 72h"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	}
	return "a " + t.Kind().String()
}

// printableKey quotes a key read from the file when it holds anything but
// the characters keys are made of, so that it cannot forge output.
func printableKey(k string) string {
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '[' || r == ']') {
			return fmt.Sprintf("%q", k)
		}
	}
	return k
}

// closestKey returns the key of t nearest to k by edit distance, if it is
// close enough to be a typo (at most a third of the key's length).
func closestKey(k string, t reflect.Type) string {
	best, bestD := "", max(1, len(k)/3)+1
	for i := range t.NumField() {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		if d := editDistance(k, name); d < bestD {
			best, bestD = name, d
		}
	}
	return best
}

// editDistance is the Damerau–Levenshtein distance (optimal string
// alignment) between a and b: insertions, deletions, substitutions and
// swaps of neighbours each count 1.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
