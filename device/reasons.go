package device

// Reasons lists every refusal reason Reason can return, in a stable order,
// so that metrics can create their series at 0 before the first refusal.
func Reasons() []string {
	var out []string
	for _, err := range []error{ErrMalformed, ErrVersion, ErrAlgorithm, ErrTooLarge, ErrTimestamp,
		ErrDIDMismatch, ErrSignature, ErrSchema, nil} {
		out = append(out, Reason(err))
	}
	return out
}
