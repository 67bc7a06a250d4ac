using ML.Finetune.Tests.Foundation;

namespace ML.Finetune.Tests.Packaging;

/// <summary>README.md's C# snippets compile as written: test/ML.Finetune.ReadmeSnippets builds them (the build fails,
/// with the error on the README line, when one rots). This checks that no C# block escapes that build.</summary>
public class ReadmeSnippetTests
{
    [Fact]
    public void EveryCSharpBlockOfTheReadme_IsCompiledByTheSnippetsProject()
    {
        var fences = File.ReadAllLines(Path.Combine(BuildInfo.RepoRoot, "README.md")).Select(l => l.Trim())
            .Where(l => l.StartsWith("```") && l.Length > 3).Select(l => l[3..].Trim().ToLowerInvariant()).ToList();
        int csharp = fences.Count(f => f is "csharp" or "cs" or "c#");
        Assert.True(csharp >= 2, "the README lost its C# snippets");
        Assert.Equal(fences.Count(f => f == "csharp"), csharp); // written as ```cs or ```c#, a block would not be compiled
        Assert.Equal(ReadmeInfo.CSharpBlockCount, csharp);
    }
}
