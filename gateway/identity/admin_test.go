package identity

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newAdminServer(t *testing.T, bearer string) (*httptest.Server, *TokenStore) {
	t.Helper()
	ts, err := OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	NewAdmin(ts, bearer, slog.New(slog.DiscardHandler)).Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, ts
}

func adminDo(t *testing.T, method, url, bearer, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminTokens(t *testing.T) {
	const bearer = "s3cret-admin-token"
	srv, store := newAdminServer(t, bearer)
	url := srv.URL + "/v1/admin/tokens"

	code, body := adminDo(t, "POST", url, bearer, `{"site":"site-a","kind":"survey","count":3,"ttl":"2h"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	var got createTokensResponse
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Tokens) != 3 || time.Until(got.Expires) < time.Hour {
		t.Fatalf("create answer %+v", got)
	}
	if err := store.Claim(got.Tokens[1], "site-a", "survey", didA, time.Now()); err != nil {
		t.Fatalf("claim an API-made token: %v", err)
	}

	code, body = adminDo(t, "GET", url, bearer, "")
	if code != http.StatusOK {
		t.Fatalf("list: %d %s", code, body)
	}
	var list struct{ Tokens []TokenRecord }
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Tokens) != 3 {
		t.Fatalf("listed %d tokens, want 3", len(list.Tokens))
	}
	for _, tok := range got.Tokens {
		if strings.Contains(body, tok) {
			t.Fatal("list leaks a token in clear")
		}
	}

	bad := []struct {
		name, method, bearer, body string
		want                       int
	}{
		{"no bearer", "POST", "", `{"site":"site-a","kind":"env","count":1,"ttl":"1h"}`, 401},
		{"wrong bearer", "POST", "s3cret-admin-tokeN", `{"site":"site-a","kind":"env","count":1,"ttl":"1h"}`, 401},
		{"wrong bearer list", "GET", "x", "", 401},
		{"bad kind", "POST", bearer, `{"site":"site-a","kind":"robot","count":1,"ttl":"1h"}`, 400},
		{"bad ttl", "POST", bearer, `{"site":"site-a","kind":"env","count":1,"ttl":"forever"}`, 400},
		{"unknown member", "POST", bearer, `{"site":"site-a","kind":"env","count":1,"ttl":"1h","admin":true}`, 400},
		{"not json", "POST", bearer, `site=a`, 400},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			code, body := adminDo(t, tc.method, url, tc.bearer, tc.body)
			if code != tc.want {
				t.Fatalf("got %d %s, want %d", code, body, tc.want)
			}
			if l, _ := store.List(); len(l) != 3 {
				t.Fatalf("refused request changed the store: %d tokens", len(l))
			}
		})
	}
}

func TestAdminDisabledWithoutToken(t *testing.T) {
	srv, store := newAdminServer(t, "")
	code, _ := adminDo(t, "POST", srv.URL+"/v1/admin/tokens", "", `{"site":"site-a","kind":"env","count":1,"ttl":"1h"}`)
	if code != http.StatusForbidden {
		t.Fatalf("got %d, want 403", code)
	}
	if l, _ := store.List(); len(l) != 0 {
		t.Fatal("disabled API stored tokens")
	}
}
