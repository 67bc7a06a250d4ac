using System.Reflection;

namespace ML.Finetune.Tests.Foundation;

/// <summary>Paths the build bakes into the test assembly.</summary>
internal static class BuildInfo
{
    public static string Get(string key) =>
        typeof(BuildInfo).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().First(a => a.Key == key).Value
        ?? throw new InvalidOperationException($"Build metadata '{key}' is missing.");

    public static string LoadProbePath => Get("LoadProbePath");
    public static string NuGetPackageRoot => Get("NuGetPackageRoot");
    public static string RepoRoot => Get("RepoRoot");
    public static string Configuration => Get("Configuration");
}
