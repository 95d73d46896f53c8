package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// JSON decoding, under the YAML, matches keys without regard to case:
// `podCidrs:` would silently set podCIDRs, and override it when both are
// written. checkKeys holds the file to the exact spelling of every key of
// the schema, at every depth.

// checkKeys returns an error naming each key of the YAML document b that
// is not spelt exactly as a field of t.
func checkKeys(b []byte, t reflect.Type) error {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return err
	}
	var doc any
	if err := json.Unmarshal(j, &doc); err != nil {
		return err
	}
	var errs []string
	walkKeys(doc, t, "", &errs)
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func walkKeys(v any, t reflect.Type, path string, errs *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch x := v.(type) {
	case []any:
		if t.Kind() == reflect.Slice {
			for i, e := range x {
				walkKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
			}
		}
	case map[string]any:
		if t.Kind() != reflect.Struct {
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			at := k
			if path != "" {
				at = path + "." + k
			}
			ft, ok := fields[k]
			if !ok {
				msg := at + ": unknown key"
				for name := range fields {
					if strings.EqualFold(name, k) {
						msg += " (keys are case-sensitive: did you mean " + name + "?)"
					}
				}
				*errs = append(*errs, msg)
				continue
			}
			walkKeys(x[k], ft, at, errs)
		}
	}
}

// jsonFields are a struct's JSON keys and their types, embedded structs'
// fields inlined as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
