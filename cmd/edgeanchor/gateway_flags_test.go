package main

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/gateway"
)

// scalarKeys walks a config structure by its YAML tags and returns the key
// path of every scalar field with its value (lists and mappings are not
// scalars). It is written apart from gateway.ConfigKeys so that the test
// does not check the flag table with the code it checks.
func scalarKeys(v reflect.Value, prefix string, out map[string]reflect.Value) {
	for i := range v.NumField() {
		f := v.Type().Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		switch f.Type.Kind() {
		case reflect.Struct:
			scalarKeys(v.Field(i), prefix+tag+".", out)
		case reflect.Slice, reflect.Map:
		default:
			out[prefix+tag] = v.Field(i)
		}
	}
}

// otherValue returns a flag argument that differs from the default v.
func otherValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		return x + "-flag"
	case int:
		return fmt.Sprint(x + 7)
	case float64:
		return fmt.Sprint(x + 7.5)
	case time.Duration:
		return (x + 7*time.Millisecond).String()
	case bool:
		return fmt.Sprint(!x)
	}
	return ""
}

// TestGatewayFlagsCoverConfig: every scalar key of gateway.Config has a flag
// of `edgeanchor gateway` (docs/operations.md promises it), and setting that
// flag changes that key, and only that key, over the file's value.
func TestGatewayFlagsCoverConfig(t *testing.T) {
	keys := map[string]reflect.Value{}
	def := gateway.DefaultConfig()
	scalarKeys(reflect.ValueOf(def), "", keys)
	if len(keys) < 30 {
		t.Fatalf("found %d scalar keys in gateway.Config: the walk is broken", len(keys))
	}
	flagOf := map[string]string{}
	for _, r := range gatewayConfigFlags {
		flagOf[r.key] = r.flag
	}
	for key, dv := range keys {
		name, ok := flagOf[key]
		if !ok {
			t.Errorf("config key %s (%s) has no flag of `edgeanchor gateway`: add a row {%q, \"flag-name\", \"usage\"} to gatewayConfigFlags in cmd/edgeanchor/gateway.go",
				key, dv.Type(), key)
			continue
		}
		arg := otherValue(dv)
		if arg == "" {
			t.Errorf("config key %s is a %s: the test does not know how to set it", key, dv.Type())
			continue
		}
		if newGatewayCmd().Flags().Lookup(name) == nil {
			t.Errorf("config key %s: `edgeanchor gateway` has no flag --%s", key, name)
			continue
		}
		cmd := &cobra.Command{}
		fromFlags := gateway.DefaultConfig()
		bindGatewayConfigFlags(cmd, &fromFlags)
		if err := cmd.ParseFlags([]string{"--" + name + "=" + arg}); err != nil {
			t.Errorf("config key %s: --%s=%s: %v", key, name, arg, err)
			continue
		}
		got := gateway.DefaultConfig() // as if read from a file
		applyGatewayConfigFlags(cmd, &fromFlags, &got)
		gotKeys := map[string]reflect.Value{}
		scalarKeys(reflect.ValueOf(got), "", gotKeys)
		for k, v := range gotKeys {
			changed := !reflect.DeepEqual(v.Interface(), keys[k].Interface())
			if k == key && !changed {
				t.Errorf("--%s=%s left %s at %v", name, arg, key, v.Interface())
			}
			if k != key && changed {
				t.Errorf("--%s=%s changed %s to %v", name, arg, k, v.Interface())
			}
		}
	}
	for _, r := range gatewayConfigFlags {
		if _, ok := keys[r.key]; !ok {
			t.Errorf("gatewayConfigFlags has a row for %s, which is not a scalar key of gateway.Config", r.key)
		}
	}
}
