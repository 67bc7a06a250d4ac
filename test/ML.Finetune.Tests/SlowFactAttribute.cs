namespace ML.Finetune.Tests;

/// <summary>
/// A test too slow for the default suite (long training, benchmarks-as-tests). Skipped unless the environment
/// variable MLFT_RUN_SLOW=1 is set: `MLFT_RUN_SLOW=1 dotnet test`.
/// </summary>
public sealed class SlowFactAttribute : FactAttribute
{
    public SlowFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("MLFT_RUN_SLOW") != "1")
            Skip = "Slow test: set MLFT_RUN_SLOW=1 to run it.";
    }
}
