// Package smoke host: runs the checks and says which asset of each package ran.
using System.Reflection;
using System.Runtime.Versioning;
using AsyncIterTools;
using AsyncPrimitives;
using PackageSmoke;

await Checks.RunAsync();

string asset = typeof(AsyncLock).Assembly.GetCustomAttribute<TargetFrameworkAttribute>()?.FrameworkName ?? "?";
string iterAsset = typeof(AsyncIter).Assembly.GetCustomAttribute<TargetFrameworkAttribute>()?.FrameworkName ?? "?";
string checksAsset = typeof(Checks).Assembly.GetCustomAttribute<TargetFrameworkAttribute>()?.FrameworkName ?? "?";
#if NETSTANDARD_ASSET
const string Expected = ".NETStandard,Version=v2.0";
#else
const string Expected = ".NETCoreApp,Version=v10.0";
#endif
Checks.Check(asset == Expected && iterAsset == Expected && checksAsset == Expected, $"runs the {Expected} assets");
Console.WriteLine($"package smoke OK: AsyncPrimitives [{asset}], AsyncIterTools [{iterAsset}], checks compiled for [{checksAsset}]");
return 0;
