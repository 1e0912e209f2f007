package control

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
)

// Seed is a 64-bit seed as JSON carries it: written as a decimal string,
// because JSON readers that hold numbers in a float64 (jq, JavaScript,
// Python's json with parse_float) round anything above 2^53, and read back
// from a string or a number.
type Seed uint64

// MarshalJSON writes s as a decimal string: "12187480498957745315".
func (s Seed) MarshalJSON() ([]byte, error) {
	return []byte(`"` + strconv.FormatUint(uint64(s), 10) + `"`), nil
}

// UnmarshalJSON reads a seed from a string (decimal, or 0x hexadecimal) or
// from a JSON number written without a fraction or exponent.
func (s *Seed) UnmarshalJSON(b []byte) error {
	text := string(bytes.TrimSpace(b))
	if len(text) >= 2 && text[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		text = str
	}
	n, err := strconv.ParseUint(text, 0, 64)
	if err != nil {
		// A type error, as for any other field: the decoder names the
		// field, and ParseRequest says what it wants.
		kind := "string"
		if len(b) > 0 && b[0] != '"' {
			kind = "number"
		}
		return &json.UnmarshalTypeError{Value: kind + " " + string(bytes.Trim(b, `"`)), Type: reflect.TypeOf(uint64(0))}
	}
	*s = Seed(n)
	return nil
}

// String is the seed in decimal.
func (s Seed) String() string { return strconv.FormatUint(uint64(s), 10) }
