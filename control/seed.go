package control

import (
	"bytes"
	"encoding/json"
	"fmt"
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
		return fmt.Errorf("seed %s is not an unsigned 64-bit integer", string(b))
	}
	*s = Seed(n)
	return nil
}

// String is the seed in decimal.
func (s Seed) String() string { return strconv.FormatUint(uint64(s), 10) }
