#!/usr/bin/env bash
# Packs both libraries as CI does, checks what is in the packages (both assets, XML docs, symbols, declared
# dependencies, path-independent build, reproducible net10.0 assets), installs them from a local folder feed into
# throwaway consumers with a private package cache, and runs them: one on the net10.0 asset, one on the netstandard2.0 asset (checks compiled
# for netstandard2.0, run by a net10.0 host).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "package smoke FAILED: $*"; exit 1; }

# The version comes from the build (Directory.Build.props' VersionPrefix, plus any VersionSuffix), never re-typed here.
version=$(dotnet msbuild "$root/src/AsyncPrimitives/AsyncPrimitives.csproj" -getProperty:PackageVersion -p:TargetFramework=net10.0)
echo "packing version $version"
# Rebuild the libraries as CI does (an earlier Release build without ContinuousIntegrationBuild would otherwise be
# reused: MSBuild does not rebuild when only the path map changes), then pack what was just built.
for project in "$root"/src/*/*.csproj; do
  dotnet build "$project" -c Release --no-incremental -p:ContinuousIntegrationBuild=true
done
# The net10.0 assets are byte-for-byte reproducible: built again from scratch by a fresh compiler process (no shared
# compiler server), each is the same file. (Not the netstandard2.0 assets: the compiler adds PolySharp's generated
# attributes in a varying order, dotnet/roslyn#42627.)
net10_assets() { for project in "$root"/src/*/*.csproj; do p=$(basename "$project" .csproj); echo "$(dirname "$project")/bin/Release/net10.0/$p.dll"; done; }
sha256sum $(net10_assets) > "$work/net10.sha256"
for project in "$root"/src/*/*.csproj; do
  dotnet build "$project" -c Release --no-incremental -f net10.0 -p:ContinuousIntegrationBuild=true -p:UseSharedCompilation=false
done
sha256sum --check "$work/net10.sha256" || fail "a net10.0 asset differs between two builds of one commit (not reproducible)"
dotnet pack "$root/AsyncTools.sln" -c Release --no-build -o "$work/feed" -p:ContinuousIntegrationBuild=true
ls "$work/feed"

# Every package the solution packs: each lib/<tfm>/ asset with its XML docs, its PDB in the .snupkg, and built
# path-independently; the .nuspec records the repository and the commit.
for nupkg in "$work/feed"/*.nupkg; do
  p=$(basename "$nupkg" ".$version.nupkg")
  snupkg="$work/feed/$p.$version.snupkg"
  [ -f "$snupkg" ] || fail "missing $p.$version.snupkg (symbols)"
  unzip -l "$nupkg" > "$work/$p.listing"
  unzip -l "$snupkg" > "$work/$p.symbols"
  tfms=$(sed -n "s:.* lib/\([^/]*\)/$p\.dll$:\1:p" "$work/$p.listing")
  [ -n "$tfms" ] || fail "$p: no lib/<tfm>/$p.dll"
  echo "$p $version: $(echo $tfms)"
  for tfm in $tfms; do
    grep -q "lib/$tfm/$p.xml" "$work/$p.listing" || fail "$p: no $tfm XML docs"
    grep -q "lib/$tfm/$p.pdb" "$work/$p.symbols" || fail "$p: no $tfm PDB in the symbols package"
    # A CI build maps source paths to /_/: the assembly records /_/... and nothing of where it was built.
    unzip -p "$nupkg" "lib/$tfm/$p.dll" > "$work/$p.$tfm.dll"
    grep -aqF "/_/src/$p/" "$work/$p.$tfm.dll" || fail "$p ($tfm): paths not mapped to /_/ (ContinuousIntegrationBuild)"
    ! grep -aqF "$root/" "$work/$p.$tfm.dll" || fail "$p ($tfm): the assembly contains the build path $root"
  done
  grep -q " README.md" "$work/$p.listing" || fail "$p: no package README"
  unzip -p "$nupkg" "$p.nuspec" > "$work/$p.nuspec"
  grep -q '<repository type="git" url="[^"]*"' "$work/$p.nuspec" || fail "$p: no repository in the .nuspec"
  if git -C "$root" rev-parse HEAD > /dev/null 2>&1; then
    grep -q "commit=\"$(git -C "$root" rev-parse HEAD)\"" "$work/$p.nuspec" || fail "$p: the .nuspec does not record the commit"
  fi
done
# The two libraries: both assets, and on net10.0 (everything in the base library) no dependency.
for p in AsyncPrimitives AsyncIterTools; do
  [ -f "$work/$p.nuspec" ] || fail "missing $p.$version.nupkg"
  for tfm in net10.0 netstandard2.0; do
    grep -q "lib/$tfm/$p.dll" "$work/$p.listing" || fail "$p: no $tfm asset"
  done
  # net10.0 depends on nothing but what the base library lacks: AsyncIterTools' limiter overloads take a RateLimiter
  # (System.Threading.RateLimiting is a package, not part of Microsoft.NETCore.App).
  allowed=""; [ "$p" = AsyncIterTools ] && allowed="System.Threading.RateLimiting"
  declared=$(awk '/targetFramework="net10.0"/ { inside = !/\/>/; next } inside && /<\/group>/ { inside = 0 } inside' "$work/$p.nuspec" \
    | sed -n 's:.*<dependency id="\([^"]*\)".*:\1:p' | sort | tr '\n' ' ' | sed 's/ $//')
  [ "$declared" = "$allowed" ] || fail "$p: net10.0 declares dependencies '$declared' (expected '$allowed')"
done
grep -q 'id="System.Linq.AsyncEnumerable"' "$work/AsyncIterTools.nuspec" \
  || fail "AsyncIterTools: netstandard2.0 does not bring LINQ over IAsyncEnumerable (System.Linq.AsyncEnumerable)"

# The packages the netstandard2.0 assets declare, as PackageReferences for the net10.0 host that runs those assets.
{
  echo '<Project><ItemGroup>'
  for p in AsyncPrimitives AsyncIterTools; do
    sed -n '/targetFramework=".NETStandard2.0"/,/<\/group>/p' "$work/$p.nuspec" \
      | sed -n 's:.*<dependency id="\([^"]*\)" version="\([^"]*\)".*:\1 \2:p'
  done | sort -u | while read -r id v; do echo "  <PackageReference Include=\"$id\" Version=\"$v\" />"; done
  echo '</ItemGroup></Project>'
} > "$work/NetStandardDependencies.props"
cat "$work/NetStandardDependencies.props"

src="$root/.ci/package-smoke"
for consumer in Consumer.Net10 Consumer.NetStandard; do
  dir="$work/$consumer"
  mkdir -p "$dir"
  cp "$src/"{Directory.Build.props,Directory.Packages.props,Directory.Build.targets,Program.cs,Checks.cs,$consumer.csproj} "$dir/"
  if [ "$consumer" = Consumer.NetStandard ]; then
    mkdir -p "$dir/checks"
    cp "$src/Checks.cs" "$src/Checks.NetStandard.csproj" "$dir/checks/"
    cp "$work/NetStandardDependencies.props" "$dir/"
  fi
  cat > "$dir/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$work/feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
  <!-- Our packages come from the local feed only, never from a same-named package elsewhere. -->
  <packageSourceMapping>
    <packageSource key="local">
      <package pattern="AsyncPrimitives" />
      <package pattern="AsyncIterTools" />
    </packageSource>
    <packageSource key="nuget.org">
      <package pattern="*" />
    </packageSource>
  </packageSourceMapping>
</configuration>
CONFIG
  NUGET_PACKAGES="$work/packages" dotnet run --project "$dir/$consumer.csproj" -p:AsyncToolsVersion="$version"
done
