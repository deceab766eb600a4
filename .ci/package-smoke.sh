#!/usr/bin/env bash
# Packs both libraries, installs them from a local folder feed into throwaway consumer projects (one running the
# net10.0 asset, one the netstandard2.0 asset) with a private package cache, and runs them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' "$root/Directory.Build.props" | head -1)

dotnet pack "$root/AsyncTools.sln" -c Release -o "$work/feed" -p:ContinuousIntegrationBuild=true
ls "$work/feed"
for p in AsyncPrimitives AsyncIterTools; do
  for f in nupkg snupkg; do
    [ -f "$work/feed/$p.$version.$f" ] || { echo "missing $p.$version.$f"; exit 1; }
  done
  unzip -l "$work/feed/$p.$version.nupkg" > "$work/$p.listing"
  grep -q "lib/net10.0/$p.xml" "$work/$p.listing" || { echo "$p: no net10.0 XML docs"; exit 1; }
  grep -q "lib/netstandard2.0/$p.dll" "$work/$p.listing" || { echo "$p: no netstandard2.0 asset"; exit 1; }
  grep -q " README.md" "$work/$p.listing" || { echo "$p: no package README"; exit 1; }
done

for consumer in Consumer.Net10 Consumer.NetStandard; do
  dir="$work/$consumer"
  mkdir -p "$dir"
  cp "$root/.ci/package-smoke/"{Directory.Build.props,Directory.Packages.props,Directory.Build.targets,Program.cs} "$dir/"
  cp "$root/.ci/package-smoke/$consumer.csproj" "$dir/"
  cat > "$dir/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$work/feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
</configuration>
CONFIG
  NUGET_PACKAGES="$work/packages" dotnet run --project "$dir/$consumer.csproj" -p:AsyncToolsVersion="$version"
done
