package ledgercmd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/cmd/edgeanchor/internal/cli"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/ledger"
	ledgerapp "github.com/edgeanchor/edgeanchor/ledger/app"
)

// The ledger's actions from the command line (docs/ledger.md, "Commands"):
// consortium proposals and approvals, device revocation and the queries.
// Every signing command can write the signed tx to a file instead of
// submitting it (--sign-only --out tx.json, no network needed);
// `ledger submit tx.json` submits such a file and waits for its commit.
//
// Exit codes: 0 committed, 1 refused by the ledger (with its reason),
// 2 usage or I/O (including an unreachable node).

func init() {
	register(newConsortiumCmd)
	register(newDeviceCmd)
	ledgerSubcommands = append(ledgerSubcommands, newLedgerSubmitCmd)
	gatewaySubcommands = append(gatewaySubcommands, newGatewayListCmd)
}

// gatewaySubcommands holds subcommands of `edgeanchor gateway` that live in
// other files (like ledgerSubcommands).
var gatewaySubcommands []func() *cobra.Command

// refusedError marks an error as "the ledger refused" (exit 1); every other
// error of these commands is usage or I/O (exit 2).
func refusedError(err error) error { return checkFailed(err) }

func usageError(format string, a ...any) error {
	return usageErr(fmt.Errorf(format, a...))
}

func ioError(err error) error { return ioErr(err) }

// ledgerFlags are the flags of every command that talks to a node.
type ledgerFlags struct {
	rpc     string
	timeout time.Duration
}

func (l *ledgerFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.rpc, "rpc", "http://127.0.0.1:26657", "a ledger node's RPC URL")
	cmd.Flags().DurationVar(&l.timeout, "timeout", 60*time.Second, "how long to wait for the node and the commit")
}

func (l *ledgerFlags) client() (*ledgerclient.Client, error) {
	c, err := ledgerclient.NewClient(l.rpc, ledgerclient.ClientOptions{CommitTimeout: l.timeout})
	if err != nil {
		return nil, usageError("--rpc: %v", err)
	}
	return c, nil
}

// signFlags are the flags of every command that signs a tx.
type signFlags struct {
	ledgerFlags
	key      string
	signOnly bool
	out      string
}

func (s *signFlags) add(cmd *cobra.Command, keyHelp string) {
	s.ledgerFlags.add(cmd)
	f := cmd.Flags()
	f.StringVar(&s.key, "key", "", keyHelp+" (SM2 private key PEM)")
	f.BoolVar(&s.signOnly, "sign-only", false, "only sign: write the tx to --out, touch no network")
	f.StringVar(&s.out, "out", "", "with --sign-only: file to write the signed tx to (- for stdout)")
}

func (s *signFlags) check() error {
	if s.key == "" {
		return usageError("--key is required")
	}
	if s.signOnly && s.out == "" {
		return usageError("--sign-only needs --out FILE")
	}
	if !s.signOnly && s.out != "" {
		return usageError("--out is only for --sign-only")
	}
	return nil
}

func (s *signFlags) signer() (*device.KeySigner, error) {
	k, err := device.LoadKeySigner(s.key)
	if err != nil {
		return nil, ioError(fmt.Errorf("--key: %w", err))
	}
	return k, nil
}

// finish signs body and either writes the tx (--sign-only) or submits it
// and reports the commit.
func (s *signFlags) finish(cmd *cobra.Command, signer device.Signer, body []byte) error {
	tx, err := anchor.EncodeTx(signer, body)
	if err != nil {
		return usageError("%v", err)
	}
	w := cmd.OutOrStdout()
	if s.signOnly {
		if s.out == "-" {
			_, err = w.Write(append(tx, '\n'))
		} else {
			err = os.WriteFile(s.out, append(tx, '\n'), 0o644)
		}
		if err != nil {
			return ioError(err)
		}
		if s.out != "-" {
			fmt.Fprintf(w, "signed tx %s written to %s (submit it with: edgeanchor ledger submit %s)\n", txHash(tx), s.out, s.out)
		}
		return nil
	}
	return submitAndReport(cmd, &s.ledgerFlags, tx)
}

func txHash(tx []byte) string {
	h := sha256.Sum256(tx)
	return hex.EncodeToString(h[:])
}

// submitAndReport submits tx, waits for its commit and prints the tx
// hash, the height and the result.
func submitAndReport(cmd *cobra.Command, l *ledgerFlags, tx []byte) error {
	c, err := l.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), l.timeout)
	defer cancel()
	w := cmd.OutOrStdout()
	r, err := c.Submit(ctx, tx)
	var ref *ledgerclient.RefusedError
	switch {
	case errors.As(err, &ref):
		fmt.Fprintf(w, "tx      %s\n", txHash(tx))
		if ref.Height > 0 {
			fmt.Fprintf(w, "height  %d\n", ref.Height)
		}
		name := ledgerapp.Code(ref.Code).Name()
		fmt.Fprintf(w, "result  refused: code %d (%s)\n", ref.Code, name)
		return refusedError(fmt.Errorf("the ledger refused the tx: code %d (%s): %s", ref.Code, name, ref.Log))
	case err != nil:
		return ioError(fmt.Errorf("submit to %s: %w", l.rpc, err))
	}
	fmt.Fprintf(w, "tx      %s\nheight  %d\nresult  committed (code 0)\n", r.TxHash, r.Height)
	return nil
}

func newLedgerSubmitCmd() *cobra.Command {
	var l ledgerFlags
	cmd := &cobra.Command{
		Use:   "submit TX.json",
		Short: "Submit a signed tx file (made with --sign-only) and wait for its commit",
		Long: `submit sends the exact tx bytes of TX.json (a trailing newline is dropped) to
the node at --rpc and waits for the block that commits it. It prints the tx
hash, the height and the result. Exit 0 committed, 1 refused by the ledger
(the reason is printed), 2 usage or I/O.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return ioError(err)
			}
			tx := bytes.TrimRight(b, "\r\n")
			if _, err := anchor.DecodeTx(tx); err != nil {
				return usageError("%s: %v", args[0], err)
			}
			return submitAndReport(cmd, &l, tx)
		},
	}
	l.add(cmd)
	return cmd
}

func newConsortiumCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consortium",
		Short: "Propose and approve consortium changes; list and show proposals",
		Long: `consortium governs the ledger (docs/ledger.md, "Committee governance"): a
proposal (admit or remove a gateway, add, remove or re-weight a validator,
change the committee or the regulators) takes effect in the block where the
K-th distinct committee member's approval lands, at or before its deadline
height. A committee member's proposal is its first approval.`,
	}
	cmd.AddCommand(newProposeCmd(), newApproveCmd(), newProposalListCmd(), newProposalShowCmd())
	return cmd
}

// proposeFlags are a proposal's flags.
type proposeFlags struct {
	signFlags
	deadline int64
	ttl      int64
}

func newProposeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "propose KIND ...",
		Short: "Propose a change: add-gateway, remove-gateway, add-validator, remove-validator, set-power, set-committee, set-regulators",
	}
	var (
		pub, site, name, did, member, vpub string
		power                              int64
		keys                               []string
		threshold                          int
		none                               bool
	)
	var succeeds string // add-gateway --succeeds: key rotation
	mk := func(use, short string, build func() (string, any, error), flags func(*cobra.Command)) *cobra.Command {
		var p proposeFlags
		c := &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := p.check(); err != nil {
					return err
				}
				kind, act, err := build()
				if err != nil {
					return err
				}
				deadline := p.deadline
				if deadline == 0 {
					if p.signOnly {
						return usageError("--sign-only needs --deadline HEIGHT (no node to read the height from)")
					}
					h, err := currentHeight(cmd, &p.ledgerFlags)
					if err != nil {
						return err
					}
					deadline = h + p.ttl
				}
				body, err := anchor.NewProposalBody(kind, act, deadline, time.Now())
				if err != nil {
					return usageError("%v", err)
				}
				signer, err := p.signer()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "proposal %s (%s, deadline height %d)\n", anchor.ProposalID(body), kind, deadline)
				return p.finish(cmd, signer, body)
			},
		}
		p.add(c, "the proposer's key: a committee member's or a regulator's")
		c.Flags().Int64Var(&p.deadline, "deadline", 0, "last block height at which an approval counts (required with --sign-only)")
		c.Flags().Int64Var(&p.ttl, "ttl", 100000, "without --deadline: the deadline is the node's height plus this many blocks")
		flags(c)
		return c
	}
	memberOrPub := func(c *cobra.Command) {
		c.Flags().StringVar(&member, "member", "", "the validator's organisation member file (member.json)")
		c.Flags().StringVar(&vpub, "validator-pub", "", "the validator's ed25519 public key, base64 (instead of --member)")
	}
	validatorKey := func() ([]byte, *ledger.MemberFile, error) {
		switch {
		case member != "" && vpub != "":
			return nil, nil, usageError("give --member or --validator-pub, not both")
		case member != "":
			m, err := ledger.ReadMemberFile(member)
			if err != nil {
				return nil, nil, usageError("--member: %v", err)
			}
			return m.Validator.PubKey, m, nil
		case vpub != "":
			k, err := base64.StdEncoding.DecodeString(vpub)
			if err != nil {
				return nil, nil, usageError("--validator-pub: %v", err)
			}
			return k, nil, nil
		}
		return nil, nil, usageError("--member FILE or --validator-pub B64 is required")
	}
	readKeys := func(flag string, paths []string) ([][]byte, error) {
		var out [][]byte
		for _, p := range paths {
			k, err := device.ReadPublicKeyFile(p)
			if err != nil {
				return nil, usageError("--%s %s: %v", flag, p, err)
			}
			der, err := device.MarshalPublicKeyDER(k)
			if err != nil {
				return nil, usageError("--%s %s: %v", flag, p, err)
			}
			out = append(out, der)
		}
		return out, nil
	}
	cmd.AddCommand(
		mk("add-gateway --pub PEM --site S [--name N] [--succeeds OLD_DID] --key KEY", "Propose admitting a gateway, or a new key of one (--succeeds)", func() (string, any, error) {
			k, err := device.ReadPublicKeyFile(pub)
			if err != nil {
				return "", nil, usageError("--pub: %v", err)
			}
			if name == "" {
				name = site
			}
			a, err := anchor.NewGatewayAction(k, site, name)
			if err != nil {
				return "", nil, usageError("%v", err)
			}
			if succeeds != "" {
				if a.Succeeds, err = device.ParseDID(succeeds); err != nil {
					return "", nil, usageError("--succeeds: %v", err)
				}
			}
			return anchor.KindAddGateway, a, nil
		}, func(c *cobra.Command) {
			c.Flags().StringVar(&pub, "pub", "", "the gateway's public key PEM")
			c.Flags().StringVar(&site, "site", "", "the gateway's site")
			c.Flags().StringVar(&name, "name", "", "the gateway's name (default: the site)")
			c.Flags().StringVar(&succeeds, "succeeds", "", "key rotation: the DID of the gateway this key succeeds (it continues that gateway's batch chain and serves its devices)")
		}),
		mk("remove-gateway --did D --key KEY", "Propose removing a gateway", func() (string, any, error) {
			d, err := device.ParseDID(did)
			if err != nil {
				return "", nil, usageError("--did: %v", err)
			}
			return anchor.KindRemoveGateway, &anchor.GatewayRefAction{DID: d}, nil
		}, func(c *cobra.Command) { c.Flags().StringVar(&did, "did", "", "the gateway's DID") }),
		mk("add-validator (--member FILE | --validator-pub B64 --power P --name N) --key KEY", "Propose adding a validator", func() (string, any, error) {
			k, m, err := validatorKey()
			if err != nil {
				return "", nil, err
			}
			if m != nil {
				if power == 0 {
					power = m.Validator.Power
				}
				if name == "" {
					name = m.Org
				}
			}
			if power == 0 {
				power = ledger.DefaultPower
			}
			return anchor.KindAddValidator, &anchor.ValidatorAction{Pub: k, Power: power, Name: name}, nil
		}, func(c *cobra.Command) {
			memberOrPub(c)
			c.Flags().Int64Var(&power, "power", 0, "voting power (default: the member file's, or 10)")
			c.Flags().StringVar(&name, "name", "", "validator name (default: the member file's org)")
		}),
		mk("remove-validator (--member FILE | --validator-pub B64) --key KEY", "Propose removing a validator", func() (string, any, error) {
			k, _, err := validatorKey()
			if err != nil {
				return "", nil, err
			}
			return anchor.KindRemoveValidator, &anchor.ValidatorRefAction{Pub: k}, nil
		}, memberOrPub),
		mk("set-power (--member FILE | --validator-pub B64) --power P --key KEY", "Propose a validator's new voting power", func() (string, any, error) {
			k, _, err := validatorKey()
			if err != nil {
				return "", nil, err
			}
			return anchor.KindSetValidatorPower, &anchor.ValidatorAction{Pub: k, Power: power}, nil
		}, func(c *cobra.Command) {
			memberOrPub(c)
			c.Flags().Int64Var(&power, "power", 0, "the new voting power")
		}),
		mk("set-committee --member-key PEM... --threshold K --key KEY", "Propose a new committee and threshold", func() (string, any, error) {
			ders, err := readKeys("member-key", keys)
			if err != nil {
				return "", nil, err
			}
			return anchor.KindSetCommittee, &anchor.Committee{Members: ders, Threshold: threshold}, nil
		}, func(c *cobra.Command) {
			c.Flags().StringArrayVar(&keys, "member-key", nil, "a committee member's public key PEM (repeatable: the whole new committee)")
			c.Flags().IntVar(&threshold, "threshold", 0, "approvals a proposal needs (1 ≤ K ≤ members)")
		}),
		mk("set-regulators (--regulator-key PEM... | --none) --key KEY", "Propose a new regulator list", func() (string, any, error) {
			if none != (len(keys) == 0) {
				return "", nil, usageError("give --regulator-key (repeatable) or --none")
			}
			ders, err := readKeys("regulator-key", keys)
			if err != nil {
				return "", nil, err
			}
			if ders == nil {
				ders = [][]byte{}
			}
			return anchor.KindSetRegulators, &anchor.RegulatorsAction{Regulators: ders}, nil
		}, func(c *cobra.Command) {
			c.Flags().StringArrayVar(&keys, "regulator-key", nil, "a regulator's public key PEM (repeatable: the whole new list)")
			c.Flags().BoolVar(&none, "none", false, "remove every regulator")
		}),
	)
	return cmd
}

func currentHeight(cmd *cobra.Command, l *ledgerFlags) (int64, error) {
	c, err := l.client()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), l.timeout)
	defer cancel()
	h, err := c.Height(ctx)
	if err != nil {
		return 0, ioError(fmt.Errorf("read the height from %s: %w", l.rpc, err))
	}
	return h, nil
}

func newApproveCmd() *cobra.Command {
	var s signFlags
	cmd := &cobra.Command{
		Use:   "approve ID --key KEY",
		Short: "Approve a proposal (signed by a committee member)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := s.check(); err != nil {
				return err
			}
			id, err := anchor.ParseHash(args[0])
			if err != nil {
				return usageError("proposal ID: %v", err)
			}
			body, err := anchor.NewApprovalBody(id, time.Now())
			if err != nil {
				return usageError("%v", err)
			}
			signer, err := s.signer()
			if err != nil {
				return err
			}
			return s.finish(cmd, signer, body)
		},
	}
	s.add(cmd, "a committee member's key")
	return cmd
}

// query runs one read command against the node.
// queryJSON is query for a command that prints one ledger answer as JSON.
func queryJSON(cmd *cobra.Command, l *ledgerFlags, fetch func(ctx context.Context, c *ledgerclient.Client) (any, error)) error {
	return query(cmd, l, func(ctx context.Context, c *ledgerclient.Client) error {
		v, err := fetch(ctx, c)
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), v)
	})
}

func query(cmd *cobra.Command, l *ledgerFlags, fn func(ctx context.Context, c *ledgerclient.Client) error) error {
	c, err := l.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), l.timeout)
	defer cancel()
	err = fn(ctx, c)
	switch {
	case errors.Is(err, ledgerclient.ErrNotFound):
		return refusedError(err)
	case err != nil:
		if cli.Marked(err) {
			return err
		}
		return ioError(err)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func newProposalListCmd() *cobra.Command {
	var l ledgerFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the committee, the regulators, the validators and every proposal with its status and approvals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return query(cmd, &l, func(ctx context.Context, c *ledgerclient.Client) error {
				com, err := c.Committee(ctx)
				if err != nil {
					return err
				}
				ps, err := c.Proposals(ctx)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "committee: %d members, threshold %d; %d regulators\n", len(com.Members), com.Threshold, len(com.Regulators))
				for _, m := range com.Members {
					fmt.Fprintf(w, "  member    %s\n", m.DID)
				}
				for _, r := range com.Regulators {
					fmt.Fprintf(w, "  regulator %s\n", r.DID)
				}
				vals, err := c.Validators(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "validators: %d\n", len(vals))
				for _, v := range vals {
					name := "" // genesis validators' names are not in the application state
					if v.Name != "" {
						name = "  " + quoteText(v.Name)
					}
					fmt.Fprintf(w, "  %s  power %d%s\n", v.Address, v.Power, name)
				}
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tKIND\tSTATUS\tAPPROVALS\tDEADLINE\tHEIGHT")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%d\n", p.ID, p.Kind, p.Status, len(p.Approvals), com.Threshold, p.Deadline, p.Height)
				}
				return tw.Flush()
			})
		},
	}
	l.add(cmd)
	return cmd
}

func newProposalShowCmd() *cobra.Command {
	var l ledgerFlags
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a proposal: its change, approvals and status (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := anchor.ParseHash(args[0])
			if err != nil {
				return usageError("proposal ID: %v", err)
			}
			return queryJSON(cmd, &l, func(ctx context.Context, c *ledgerclient.Client) (any, error) { return c.Proposal(ctx, id) })
		},
	}
	l.add(cmd)
	return cmd
}

func newDeviceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Revoke a device; show a device or a gateway's devices as the ledger has them",
	}
	var s signFlags
	var did, reason string
	revoke := &cobra.Command{
		Use:   "revoke --did D --reason R --key KEY",
		Short: "Revoke a device (signed by its registering gateway or a regulator)",
		Long: `revoke signs a RevokeDevice tx with --key (the gateway that registered the
device, or a regulator) and submits it, or writes it with --sign-only. Every
gateway following the ledger refuses the device's connections and readings
once the revocation commits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := s.check(); err != nil {
				return err
			}
			d, err := device.ParseDID(did)
			if err != nil {
				return usageError("--did: %v", err)
			}
			body, err := anchor.NewRevokeDeviceBody(d, reason, time.Now())
			if err != nil {
				return usageError("%v", err)
			}
			signer, err := s.signer()
			if err != nil {
				return err
			}
			return s.finish(cmd, signer, body)
		},
	}
	s.add(revoke, "the registering gateway's key or a regulator's key")
	revoke.Flags().StringVar(&did, "did", "", "the device's DID")
	revoke.Flags().StringVar(&reason, "reason", "", "why (stored on the ledger)")

	var ls ledgerFlags
	show := &cobra.Command{
		Use:   "show DID",
		Short: "Show a device's ledger record (JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := device.ParseDID(args[0])
			if err != nil {
				return usageError("%v", err)
			}
			return queryJSON(cmd, &ls, func(ctx context.Context, c *ledgerclient.Client) (any, error) { return c.Device(ctx, d) })
		},
	}
	ls.add(show)

	var ll ledgerFlags
	var gw string
	list := &cobra.Command{
		Use:   "list --gateway DID",
		Short: "List the devices a gateway registered",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := device.ParseDID(gw)
			if err != nil {
				return usageError("--gateway: %v", err)
			}
			return query(cmd, &ll, func(ctx context.Context, c *ledgerclient.Client) error {
				devs, err := c.GatewayDevices(ctx, d)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DID\tKIND\tSITE\tSTATUS\tHEIGHT")
				for _, r := range devs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", r.DID, r.Kind, quoteText(r.Site), r.Status, r.Height)
				}
				return tw.Flush()
			})
		},
	}
	ll.add(list)
	list.Flags().StringVar(&gw, "gateway", "", "the gateway's DID")
	cmd.AddCommand(revoke, show, list)
	return cmd
}

func newGatewayListCmd() *cobra.Command {
	var l ledgerFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every gateway the ledger has admitted, with its status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return query(cmd, &l, func(ctx context.Context, c *ledgerclient.Client) error {
				gws, err := c.Gateways(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DID\tSITE\tNAME\tSTATUS\tLAST_SEQ\tHEIGHT\tKEY_LINE")
				for _, g := range gws {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", g.DID, quoteText(g.Site), quoteText(g.Name), g.Status, g.LastSeq, g.Height, keyLineText(g))
				}
				return tw.Flush()
			})
		},
	}
	l.add(cmd)
	return cmd
}

// keyLineText names a gateway's key rotations (ledger text, quoted like
// the site and the name).
func keyLineText(g anchor.GatewayRecord) string {
	var parts []string
	if g.Predecessor != "" {
		parts = append(parts, "succeeds "+quoteText(string(g.Predecessor)))
	}
	if g.Successor != "" {
		parts = append(parts, fmt.Sprintf("succeeded by %s at %d", quoteText(string(g.Successor)), g.SucceededHeight))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// quoteText prints ledger text (untrusted: a gateway chose it) without
// control characters or tabs that would break the table.
func quoteText(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == ' ' }) {
		return fmt.Sprintf("%q", s)
	}
	return s
}
