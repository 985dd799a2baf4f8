package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/nkudo/nkudo/api"
)

// ReposCmd manages the tenant's repositories.
type ReposCmd struct {
	List      ReposListCmd      `cmd:"" default:"withargs" help:"List the tenant's repositories (the default)."`
	Add       ReposAddCmd       `cmd:"" help:"Register a repository; prints its webhook URL and a new webhook secret (shown once)."`
	Show      ReposShowCmd      `cmd:"" help:"Show one repository."`
	Set       ReposSetCmd       `cmd:"" help:"Change a repository's branch, path, credentials or suspension; rotate its webhook secret."`
	Rm        ReposRmCmd        `cmd:"" name:"rm" help:"Remove a repository."`
	Reconcile ReposReconcileCmd `cmd:"" help:"Reconcile a repository now, without following it (see apply --wait)."`
}

// webhookSecretBytes is the entropy of a generated webhook secret: 256 bits,
// printed as 64 hex digits (every forge accepts that as a secret).
const webhookSecretBytes = 32

// newWebhookSecret returns a fresh random webhook secret.
func newWebhookSecret() (string, error) {
	b := make([]byte, webhookSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate webhook secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// forgeKind maps the --forge flag to the API's forge kind; "notes" is the
// short form of "gitnotes".
func forgeKind(flag string) (string, error) {
	switch flag {
	case "", "github", "gitea", "gitlab", "gitnotes":
		return flag, nil
	case "notes":
		return "gitnotes", nil
	}
	return "", fmt.Errorf("--forge %q: want github, gitea, gitlab or notes", flag)
}

// WebhookSettings are the values to enter in the forge's webhook form.
type WebhookSettings struct {
	// Forge is the forge whose form the settings are written for
	// ("" = any forge: the delivery format is GitHub's).
	Forge string `json:"forge,omitempty"`
	// Where says where the form is, in the forge's own words.
	Where       string `json:"where"`
	PayloadURL  string `json:"payloadUrl"`
	ContentType string `json:"contentType"`
	Secret      string `json:"secret"`
	// Events are the events to select; any other event is acknowledged
	// and ignored.
	Events []string `json:"events"`
}

// webhookSettings writes the form for the repository's forge kind.
func webhookSettings(kind, url, secret string) WebhookSettings {
	w := WebhookSettings{Forge: kind, PayloadURL: url, ContentType: "application/json", Secret: secret}
	switch kind {
	case "github":
		w.Where = "GitHub: repository Settings > Webhooks > Add webhook (SSL verification enabled)"
		w.Events = []string{"Pushes", "Pull requests"}
	case "gitea":
		w.Where = "Gitea/Forgejo: repository Settings > Webhooks > Add webhook > Gitea (HTTP method POST)"
		w.Events = []string{"Push", "Pull Request"}
	case "gitlab":
		// GitLab sends the secret as a token header and has no content
		// type choice: it always posts JSON.
		w.Where = "GitLab: project Settings > Webhooks > Add new webhook (Secret token; SSL verification enabled)"
		w.Events = []string{"Push events", "Merge request events"}
	default:
		w.Forge = ""
		w.Where = "any forge: a GitHub-style webhook (X-GitHub-Event, X-Hub-Signature-256), or Gitea's or GitLab's own"
		w.Events = []string{"push", "pull_request"}
	}
	return w
}

func (w WebhookSettings) print(out io.Writer) {
	fmt.Fprintf(out, "\nWebhook settings for %s\n", w.Where)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  Payload URL:\t%s\n", w.PayloadURL)
	fmt.Fprintf(tw, "  Content type:\t%s\n", w.ContentType)
	fmt.Fprintf(tw, "  Secret:\t%s\n", w.Secret)
	fmt.Fprintf(tw, "  Events:\t%s\n", strings.Join(w.Events, ", "))
	tw.Flush()
}

// ReposAddCmd registers a repository.
type ReposAddCmd struct {
	URL              string `arg:"" name:"url" help:"Git URL: https://…, ssh://… or user@host:path (file:// and paths only when the server allows local sources)."`
	Name             string `placeholder:"NAME" help:"Repository name (default: the last element of the URL, without .git)."`
	Branch           string `placeholder:"BRANCH" help:"Branch to track (default: the remote's default branch)."`
	Path             string `placeholder:"DIR" help:"Directory of the manifests inside the repository (default: the root)."`
	Credentials      string `placeholder:"NAME" help:"Tenant credential to fetch with (see 'nkudoctl credentials')."`
	Forge            string `placeholder:"KIND" help:"Where commit statuses go and whose webhook form to print: github, gitea, gitlab or notes (git notes pushed to the repository); default none."`
	ForgeProject     string `name:"forge-project" placeholder:"OWNER/NAME" help:"The project on the forge (owner/name, or GitLab's path or ID)."`
	ForgeAPIURL      string `name:"forge-api-url" placeholder:"URL" help:"The forge's API base URL (default: the public forge's)."`
	ForgeCredentials string `name:"forge-credentials" placeholder:"NAME" help:"Tenant credential to post commit statuses with."`
}

// Help is the long help text.
func (c *ReposAddCmd) Help() string {
	return `Registers a git repository of manifests with the control plane. A new
webhook secret is generated (256 random bits) and printed once, with the
webhook URL and the exact settings to enter in the forge's webhook form: the
control plane keeps only the secret, and 'repos set --rotate-webhook-secret'
makes a new one. Without a webhook the control plane still polls the branch.

Examples:

  nkudoctl repos add https://github.com/acme/fleet.git --branch main \
    --credentials github-ci --forge github --forge-project acme/fleet \
    --forge-credentials github-ci
  nkudoctl repos add https://git.example.com/ops/fleet.git --forge gitea \
    --forge-api-url https://git.example.com/api/v1 --forge-project ops/fleet`
}

// reposAdded is the -o json form of repos add.
type reposAdded struct {
	Repository    api.Repository  `json:"repository"`
	WebhookSecret string          `json:"webhookSecret"`
	Webhook       WebhookSettings `json:"webhook"`
}

// Run registers.
func (c *ReposAddCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	kind, err := forgeKind(c.Forge)
	if err != nil {
		return err
	}
	secret, err := newWebhookSecret()
	if err != nil {
		return err
	}
	repo, err := client.CreateRepo(ctx, api.CreateRepoRequest{
		Name: c.Name, URL: c.URL, Branch: c.Branch, Path: c.Path, WebhookSecret: secret,
		CredentialsRef: c.Credentials, ForgeKind: kind, ForgeAPIURL: c.ForgeAPIURL,
		ForgeProject: c.ForgeProject, ForgeCredentialsRef: c.ForgeCredentials,
	})
	if err != nil {
		return fmt.Errorf("add repository %s: %w", c.URL, err)
	}
	hook := webhookSettings(repo.ForgeKind, repo.WebhookURL, secret)
	if g.Output == "json" {
		return writeJSON(s, reposAdded{Repository: repo, WebhookSecret: secret, Webhook: hook})
	}
	fmt.Fprintf(s.Out, "repository %s added\n", repo.Name)
	fmt.Fprintf(s.Out, "ID:             %s\n", repo.ID)
	fmt.Fprintf(s.Out, "Webhook URL:    %s\n", repo.WebhookURL)
	fmt.Fprintf(s.Out, "Webhook secret: %s\n", secret)
	fmt.Fprintln(s.Out, "(the secret is shown only now: enter it in the forge before leaving this screen)")
	hook.print(s.Out)
	return nil
}

// ReposListCmd lists repositories.
type ReposListCmd struct{}

// Run lists.
func (c *ReposListCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	repos, err := client.ListRepos(ctx)
	if err != nil {
		return fmt.Errorf("list repositories: %w", err)
	}
	if g.Output == "json" {
		return writeJSON(s, repos)
	}
	w := tabwriter.NewWriter(s.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tURL\tBRANCH\tPATH\tFORGE\tSTATE\tAPPLIED")
	for _, r := range repos {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.URL, dash(r.Branch), dash(r.Path),
			dash(r.ForgeKind), repoState(r), dash(shortSHA(r.LastAppliedCommit)))
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func repoState(r api.Repository) string {
	switch {
	case r.Suspended:
		return "suspended"
	case r.LastError != "":
		return "error"
	}
	return "active"
}

// ReposShowCmd shows one repository.
type ReposShowCmd struct {
	Repo string `arg:"" help:"Repository ID or name."`
}

// Run shows.
func (c *ReposShowCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	r, err := pickRepo(ctx, client, c.Repo)
	if err != nil {
		return err
	}
	if g.Output == "json" {
		return writeJSON(s, r)
	}
	printRepo(s.Out, r)
	return nil
}

func printRepo(out io.Writer, r api.Repository) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"ID", r.ID}, {"Name", r.Name}, {"URL", r.URL}, {"Branch", dash(r.Branch)}, {"Path", dash(r.Path)},
		{"State", repoState(r)}, {"Credentials", dash(r.CredentialsRef)},
		{"Forge", dash(r.ForgeKind)}, {"Forge project", dash(r.ForgeProject)}, {"Forge API URL", dash(r.ForgeAPIURL)},
		{"Forge credentials", dash(r.ForgeCredentialsRef)},
		{"Webhook URL", r.WebhookURL}, {"Webhook secret", map[bool]string{true: "set", false: "none"}[r.HasWebhookSecret]},
		{"Last seen", dash(r.LastSeenCommit)}, {"Last applied", dash(r.LastAppliedCommit)},
		{"Last error", dash(r.LastError)}, {"Created", r.CreatedAt.Format("2006-01-02 15:04:05Z07:00")},
		{"Verify commits", verifySummary(r.Verify)},
		{"Destructive label", destructiveLabel(r)},
	} {
		fmt.Fprintf(w, "%s:\t%s\n", kv[0], kv[1])
	}
	w.Flush()
}

// ReposSetCmd changes a repository. Flags not given stay as they are.
type ReposSetCmd struct {
	Repo                string  `arg:"" help:"Repository ID or name."`
	Branch              *string `placeholder:"BRANCH" help:"Branch to track."`
	Path                *string `placeholder:"DIR" help:"Directory of the manifests ('' = the root)."`
	Credentials         *string `placeholder:"NAME" help:"Tenant credential to fetch with ('' = none)."`
	ForgeCredentials    *string `name:"forge-credentials" placeholder:"NAME" help:"Tenant credential to post statuses with ('' = none)."`
	Suspend             bool    `help:"Stop reconciling the repository." xor:"suspend"`
	Resume              bool    `help:"Reconcile the repository again." xor:"suspend"`
	RotateWebhookSecret bool    `name:"rotate-webhook-secret" help:"Generate a new webhook secret and print it (once); the old one stops verifying deliveries."`
	DestructiveLabel    *string `name:"destructive-label" placeholder:"LABEL" help:"Pull-request label that accepts a plan deleting or replacing VMs ('' = nkudo/destructive-ok)."`
	VerifyFlags
}

// destructiveLabel is the label that accepts the repository's destructive
// pull-request plans.
func destructiveLabel(r api.Repository) string {
	if r.DestructiveLabel == "" {
		return api.DefaultDestructiveLabel + " (default)"
	}
	return r.DestructiveLabel
}

// reposSet is the -o json form of repos set.
type reposSet struct {
	Repository    api.Repository   `json:"repository"`
	WebhookSecret string           `json:"webhookSecret,omitempty"`
	Webhook       *WebhookSettings `json:"webhook,omitempty"`
}

// Run changes.
func (c *ReposSetCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	req := api.UpdateRepoRequest{Branch: c.Branch, Path: c.Path, CredentialsRef: c.Credentials, ForgeCredentialsRef: c.ForgeCredentials,
		DestructiveLabel: c.DestructiveLabel}
	if c.Suspend || c.Resume {
		req.Suspended = &c.Suspend
	}
	var secret string
	if c.RotateWebhookSecret {
		var err error
		if secret, err = newWebhookSecret(); err != nil {
			return err
		}
		req.WebhookSecret = &secret
	}
	if req == (api.UpdateRepoRequest{}) && !c.VerifyFlags.given() {
		return errors.New("nothing to change: pass --branch, --path, --credentials, --forge-credentials, --suspend, --resume, --rotate-webhook-secret, --destructive-label or --verify-ssh/--verify-gpg/--verify-mode")
	}
	r, err := pickRepo(ctx, client, c.Repo)
	if err != nil {
		return err
	}
	if req.Verify, err = c.VerifyFlags.policy(r.Verify); err != nil {
		return err
	}
	r, err = client.UpdateRepo(ctx, r.ID, req)
	if err != nil {
		return fmt.Errorf("update repository %s: %w", c.Repo, err)
	}
	out := reposSet{Repository: r}
	if secret != "" {
		hook := webhookSettings(r.ForgeKind, r.WebhookURL, secret)
		out.WebhookSecret, out.Webhook = secret, &hook
	}
	if g.Output == "json" {
		return writeJSON(s, out)
	}
	fmt.Fprintf(s.Out, "repository %s updated\n", r.Name)
	if secret != "" {
		fmt.Fprintf(s.Out, "New webhook secret: %s\n", secret)
		fmt.Fprintln(s.Out, "(shown only now: enter it in the forge's webhook; deliveries signed with the old one are refused)")
		out.Webhook.print(s.Out)
		return nil
	}
	printRepo(s.Out, r)
	return nil
}

// ReposRmCmd removes a repository.
type ReposRmCmd struct {
	Repo string `arg:"" help:"Repository ID or name."`
}

// Run removes.
func (c *ReposRmCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	r, err := pickRepo(ctx, client, c.Repo)
	if err != nil {
		return err
	}
	if err := client.DeleteRepo(ctx, r.ID); err != nil {
		return fmt.Errorf("remove repository %s: %w", r.Name, err)
	}
	if g.Output == "json" {
		return writeJSON(s, map[string]string{"removed": r.ID})
	}
	fmt.Fprintf(s.Out, "repository %s (%s) removed\n", r.Name, r.ID)
	return nil
}

// ReposReconcileCmd triggers a reconcile.
type ReposReconcileCmd struct {
	Repo string `arg:"" optional:"" help:"Repository ID or name (default: the tenant's only repository)."`
	Ref  string `placeholder:"REF" help:"Branch or commit to reconcile (default: the tracked branch head)."`
}

// Run triggers.
func (c *ReposReconcileCmd) Run(ctx context.Context, g *Globals, s *Streams, client *api.Client) error {
	r, err := pickRepo(ctx, client, c.Repo)
	if err != nil {
		return err
	}
	res, err := client.Reconcile(ctx, r.ID, c.Ref)
	if err != nil {
		return fmt.Errorf("reconcile %s: %w", r.Name, err)
	}
	if g.Output == "json" {
		return writeJSON(s, res)
	}
	switch {
	case res.Queued:
		fmt.Fprintf(s.Out, "reconcile of %s queued\n", r.Name)
	case res.Commit != "":
		fmt.Fprintf(s.Out, "reconciled %s at %s: %s\n", r.Name, shortSHA(res.Commit), res.Summary)
	default:
		fmt.Fprintf(s.Out, "reconcile of %s not started: %s\n", r.Name, res.Message)
		return exitStatus(exitError)
	}
	return nil
}
