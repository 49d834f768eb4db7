package app

import (
	"context"
	"strconv"
	"strings"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Query answers the paths of docs/ledger.md with JSON from the committed
// state; Height in the answer is the committed height it reflects.
//
//	/device/{did}            anchor.DeviceRecord
//	/gateway/{did}           anchor.GatewayRecord
//	/gateway/{did}/devices   []anchor.DeviceRecord, by DID, the first page
//	/gateway/{did}/devices/after/{did}  the next page: DIDs after that one
//	/batch/{gateway}/{seq}   anchor.BatchRecord
//	/batch-by-root/{hex}     anchor.BatchRecord
//	/last-batch/{gateway}    anchor.BatchRecord (not_found before the first batch)
func (a *App) Query(_ context.Context, req *abci.RequestQuery) (*abci.ResponseQuery, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	value, ref := a.query(req.Path)
	if ref != nil {
		return &abci.ResponseQuery{Code: uint32(ref.code), Codespace: Codespace, Log: ref.Error(), Height: a.height}, nil
	}
	return &abci.ResponseQuery{Code: uint32(CodeOK), Key: []byte(req.Path), Value: value, Height: a.height}, nil
}

func (a *App) query(path string) ([]byte, *refusal) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	st := newOverlay(a.state)
	did := func(s string) (device.DID, *refusal) {
		d, err := device.ParseDID(s)
		if err != nil {
			return "", refuse(CodeBadQuery, err.Error())
		}
		return d, nil
	}
	if v, ref, ok := a.queryGovernance(st, parts); ok {
		return v, ref
	}
	switch {
	case len(parts) == 2 && parts[0] == "device":
		d, ref := did(parts[1])
		if ref != nil {
			return nil, ref
		}
		return a.lookup(st, keyDevice(d), "device "+string(d))
	case len(parts) == 2 && parts[0] == "gateway":
		d, ref := did(parts[1])
		if ref != nil {
			return nil, ref
		}
		return a.lookup(st, keyGateway(d), "gateway "+string(d))
	case len(parts) == 3 && parts[0] == "gateway" && parts[2] == "devices":
		d, ref := did(parts[1])
		if ref != nil {
			return nil, ref
		}
		if _, ref := a.lookup(st, keyGateway(d), "gateway "+string(d)); ref != nil {
			return nil, ref
		}
		return a.lineDevices(st, d, ""), nil
	case len(parts) == 5 && parts[0] == "gateway" && parts[2] == "devices" && parts[3] == "after":
		d, ref := did(parts[1])
		if ref != nil {
			return nil, ref
		}
		after, ref := did(parts[4])
		if ref != nil {
			return nil, ref
		}
		if _, ref := a.lookup(st, keyGateway(d), "gateway "+string(d)); ref != nil {
			return nil, ref
		}
		return a.lineDevices(st, d, after), nil
	case len(parts) == 3 && parts[0] == "batch":
		d, ref := did(parts[1])
		if ref != nil {
			return nil, ref
		}
		seq, err := strconv.ParseUint(parts[2], 10, 64)
		if err != nil || seq == 0 {
			return nil, refuse(CodeBadQuery, "seq must be a positive integer")
		}
		if v := a.lineBatch(st, d, seq); v != nil {
			return v, nil
		}
		return nil, refuse(CodeNotFound, "batch "+parts[2]+" of "+string(d))
	case len(parts) == 2 && parts[0] == "batch-by-root":
		root, err := anchor.ParseHash(parts[1])
		if err != nil {
			return nil, refuse(CodeBadQuery, err.Error())
		}
		return a.batchByRoot(root)
	case len(parts) == 2 && parts[0] == "last-batch":
		d, ref := did(parts[1])
		if ref != nil {
			return nil, ref
		}
		var gw anchor.GatewayRecord
		found, err := st.getJSON(keyGateway(d), &gw)
		if err != nil {
			panic(err)
		}
		if !found {
			return nil, refuse(CodeNotFound, "gateway "+string(d))
		}
		if gw.LastSeq == 0 {
			return nil, refuse(CodeNotFound, "gateway "+string(d)+" has anchored no batch")
		}
		if v := a.lineBatch(st, d, gw.LastSeq); v != nil {
			return v, nil
		}
		return nil, refuse(CodeNotFound, "batch")
	}
	return nil, refuse(CodeBadQuery, path)
}

func (a *App) lookup(st *overlay, key, what string) ([]byte, *refusal) {
	v, err := st.get(key)
	if err != nil {
		panic(err)
	}
	if v == nil {
		return nil, refuse(CodeNotFound, what)
	}
	return v, nil
}

// maxListed bounds one list answer (a page of /gateway/{did}/devices).
const maxListed = 10000

func (a *App) batchByRoot(root anchor.Hash) ([]byte, *refusal) {
	prefix := []byte("r/" + root.String() + "/")
	it, err := a.db.Iterator(prefix, prefixEnd(prefix))
	if err != nil {
		panic(err)
	}
	defer it.Close()
	if !it.Valid() {
		return nil, refuse(CodeNotFound, "batch with root "+root.String())
	}
	rest := strings.TrimPrefix(string(it.Key()), string(prefix)) // {gateway}/{seq}
	v, err := a.db.Get([]byte("b/" + rest))
	if err != nil {
		panic(err)
	}
	if v == nil {
		return nil, refuse(CodeNotFound, "batch with root "+root.String())
	}
	return v, nil
}

// prefixEnd is the smallest key after every key starting with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
