// Package identity is what ties a gateway to the ledger's device registry:
// the identity cache that follows it (the broker's Registry, with a
// snapshot for offline starts), enrollment (a one-time token and a signed
// credential, checked and registered on the ledger), the token store and
// the token admin API. It knows nothing of the gateway daemon, which
// assembles it (gateway.New with Deps.Ledger).
package identity
