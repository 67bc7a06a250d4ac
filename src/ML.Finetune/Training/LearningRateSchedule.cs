namespace ML.Finetune.Training;

public enum LearningRateScheduleKind { Constant, Linear, Cosine }

/// <summary>
/// Learning-rate multiplier per optimizer step (HF convention): during warmup lr·step/warmup; then constant, linear
/// decay to 0 at <c>totalSteps</c>, or half-cosine decay to 0.
/// </summary>
public sealed record LearningRateSchedule(LearningRateScheduleKind Kind, int WarmupSteps, int TotalSteps)
{
    public double Factor(int step)
    {
        if (WarmupSteps > 0 && step < WarmupSteps) return (double)step / WarmupSteps;
        if (Kind == LearningRateScheduleKind.Constant) return 1.0;
        int decay = Math.Max(1, TotalSteps - WarmupSteps);
        double progress = Math.Clamp((double)(step - WarmupSteps) / decay, 0, 1);
        return Kind == LearningRateScheduleKind.Linear ? 1 - progress : 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    public double LearningRate(double baseLr, int step) => baseLr * Factor(step);
}
