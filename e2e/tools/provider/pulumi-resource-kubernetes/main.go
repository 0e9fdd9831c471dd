// Command pulumi-resource-kubernetes serves the pulumi-kubernetes provider from its Go module.
//
// The upstream main embeds schema files that its release build generates and that are not in
// the module. e2e/build-tools.sh writes them beside a temporary copy of this file, from the
// schema.json and terraform-mapping.json that the provider module itself carries (with the
// schema's version set to the release), and builds that copy.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, pulumiSchema, terraformMapping)
}
