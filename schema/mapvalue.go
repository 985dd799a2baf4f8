package schema

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
)

// errNoFastPath: mapValue met something it does not map exactly as
// encoding/json would; the caller takes the JSON round trip instead.
var errNoFastPath = errors.New("value needs the JSON round trip")

// decodeValue sets *dst from a document value as json.Unmarshal of
// json.Marshal(v) would, result and error alike. The round trip was a
// sixth of a load's time; values that passed their schema (exact keys,
// fitting types) are mapped directly, anything else takes the round trip.
func decodeValue(v any, dst any) error {
	rv := reflect.ValueOf(dst).Elem()
	probe := reflect.New(rv.Type()).Elem()
	if mapValue(v, probe) == nil {
		rv.Set(probe)
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, dst)
}

// mapValue sets the zero value dst from v, or returns errNoFastPath.
func mapValue(v any, dst reflect.Value) error {
	if v == nil {
		switch dst.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Map, reflect.String, reflect.Int, reflect.Struct:
			return nil // null leaves a zero value zero
		}
		return errNoFastPath
	}
	switch dst.Kind() {
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return errNoFastPath
		}
		dst.SetString(s)
		return nil
	case reflect.Int:
		switch n := v.(type) {
		case int64:
			dst.SetInt(n)
			return nil
		case float64:
			// encoding/json writes an integral float as its shortest
			// decimal, which is the integer itself below 2^53.
			if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
				dst.SetInt(int64(n))
				return nil
			}
		}
		return errNoFastPath
	case reflect.Pointer:
		p := reflect.New(dst.Type().Elem())
		if err := mapValue(v, p.Elem()); err != nil {
			return err
		}
		dst.Set(p)
		return nil
	case reflect.Slice:
		items, ok := v.([]any)
		if !ok {
			return errNoFastPath
		}
		s := reflect.MakeSlice(dst.Type(), len(items), len(items))
		for i, item := range items {
			if item == nil {
				return errNoFastPath
			}
			if err := mapValue(item, s.Index(i)); err != nil {
				return err
			}
		}
		dst.Set(s)
		return nil
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok || dst.Type().Key().Kind() != reflect.String {
			return errNoFastPath
		}
		out := reflect.MakeMapWithSize(dst.Type(), len(m))
		for k, item := range m {
			if item == nil {
				return errNoFastPath
			}
			e := reflect.New(dst.Type().Elem()).Elem()
			if err := mapValue(item, e); err != nil {
				return err
			}
			out.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), e)
		}
		dst.Set(out)
		return nil
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return errNoFastPath
		}
		t := dst.Type()
		for k, item := range m {
			field := -1
			for i := range t.NumField() {
				f := t.Field(i)
				if f.Anonymous {
					return errNoFastPath // promoted fields: not mapped here
				}
				name := jsonName(f)
				if name == "" {
					continue
				}
				if name == k {
					field = i
					break
				}
				if strings.EqualFold(name, k) {
					// encoding/json would match this key case-insensitively.
					return errNoFastPath
				}
			}
			if field < 0 {
				continue // encoding/json ignores a key no field is named
			}
			if err := mapValue(item, dst.Field(field)); err != nil {
				return err
			}
		}
		return nil
	}
	return errNoFastPath
}

// jsonName is the key encoding/json uses for field f ("" for none).
func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return ""
	}
	if name, _, _ := strings.Cut(tag, ","); name != "" {
		return name
	}
	return f.Name
}
