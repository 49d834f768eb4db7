package identity

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Admin serves the site manager's HTTP admin API:
//
//	POST /v1/admin/tokens  {"site":"site-a","kind":"payroll","count":10,"ttl":"72h"}
//	  → 201 {"tokens":["<64 hex>",…],"expires":"…Z"}
//	GET  /v1/admin/tokens
//	  → 200 {"tokens":[{"hash":…,"site":…,"kind":…,"created":…,"expires":…,"used":…,"used_by":…}]}
//
// Every request must carry "Authorization: Bearer <admin token>"; the token is
// compared in constant time. With no admin token configured the API answers
// 403 to everything.
type Admin struct {
	tokens *TokenStore
	bearer [sha256.Size]byte
	on     bool
	log    *slog.Logger
	now    func() time.Time
}

// NewAdmin builds the admin API over tokens. bearerToken "" disables it.
func NewAdmin(tokens *TokenStore, bearerToken string, log *slog.Logger) *Admin {
	return &Admin{
		tokens: tokens,
		bearer: sha256.Sum256([]byte(bearerToken)),
		on:     bearerToken != "",
		log:    log,
		now:    time.Now,
	}
}

// Routes mounts the admin API on mux.
func (a *Admin) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/admin/tokens", a.auth(a.createTokens))
	mux.HandleFunc("GET /v1/admin/tokens", a.auth(a.listTokens))
}

// maxAdminBody bounds a request body.
const maxAdminBody = 4 << 10

func (a *Admin) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.on {
			adminError(w, http.StatusForbidden, "admin API disabled: no admin token configured")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], a.bearer[:]) != 1 || !ok {
			a.log.Warn("admin request refused", "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgeanchor-admin"`)
			adminError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		h(w, r)
	}
}

type createTokensRequest struct {
	Site  string `json:"site"`
	Kind  string `json:"kind"`
	Count int    `json:"count"`
	TTL   string `json:"ttl"`
}

type createTokensResponse struct {
	Tokens  []string  `json:"tokens"`
	Expires time.Time `json:"expires"`
}

func (a *Admin) createTokens(w http.ResponseWriter, r *http.Request) {
	var req createTokensRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		adminError(w, http.StatusBadRequest, "body must be JSON {site, kind, count, ttl}: "+err.Error())
		return
	}
	if req.Count == 0 {
		req.Count = 1
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		adminError(w, http.StatusBadRequest, fmt.Sprintf("ttl %q: want a Go duration such as 72h", req.TTL))
		return
	}
	toks, exp, err := a.tokens.Create(TokenRequest{Site: req.Site, Kind: req.Kind, Count: req.Count, TTL: ttl}, a.now())
	if errors.Is(err, ErrBadTokenRequest) {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		a.log.Error("token create failed", "error", err)
		adminError(w, http.StatusInternalServerError, "token store failed")
		return
	}
	a.log.Info("enrollment tokens created", "site", req.Site, "kind", req.Kind, "count", req.Count, "expires", exp)
	writeAdminJSON(w, http.StatusCreated, createTokensResponse{Tokens: toks, Expires: exp})
}

func (a *Admin) listTokens(w http.ResponseWriter, _ *http.Request) {
	list, err := a.tokens.List()
	if err != nil {
		a.log.Error("token list failed", "error", err)
		adminError(w, http.StatusInternalServerError, "token store failed")
		return
	}
	if list == nil {
		list = []TokenRecord{}
	}
	writeAdminJSON(w, http.StatusOK, map[string]any{"tokens": list})
}

func adminError(w http.ResponseWriter, code int, msg string) {
	writeAdminJSON(w, code, map[string]string{"error": msg})
}

func writeAdminJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
