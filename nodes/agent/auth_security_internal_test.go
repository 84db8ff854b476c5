package agent

import (
	"context"
	"testing"

	"github.com/netsource/netsource/nodes/taas"
	"github.com/netsource/netsource/streams"
)

// The command line hands the global --creds/--tls-*/--auth flags to Run through the
// context; explicit Options win.
func TestSecurityFromContextOrOptions(t *testing.T) {
	fromFlags := Security{Client: streams.ClientSecurity{Creds: "/etc/netsource/agent-hostA.nk"}, ServerConfig: "auth.conf"}
	ctx := WithSecurity(context.Background(), fromFlags)
	if got := (Options{}).security(ctx); got != fromFlags {
		t.Fatalf("from context: %+v, want %+v", got, fromFlags)
	}
	explicit := Security{Client: streams.ClientSecurity{Creds: "other.nk"}}
	if got := (Options{Security: explicit}).security(ctx); got != explicit {
		t.Fatalf("explicit: %+v, want %+v", got, explicit)
	}
	if got := (Options{}).security(context.Background()); got != (Security{}) {
		t.Fatalf("none: %+v", got)
	}
}

func TestTaaSBucketNameMatchesPermissions(t *testing.T) {
	if streams.TaaSBucket != taas.KVBucket {
		t.Fatalf("agents may use KV bucket %s but the tap id directory is %s: update streams.TaaSBucket", streams.TaaSBucket, taas.KVBucket)
	}
}
