using System.Text;
using Microsoft.ML.Tokenizers;

namespace ML.Finetune.Tokenization;

/// <summary>Normalizer for the HF normalizers we support: Unicode forms (NFC/NFD/NFKC/NFKD), Lowercase, and sequences of them.</summary>
internal sealed class SimpleNormalizer : Normalizer
{
    private readonly NormalizationForm? _form;
    private readonly bool _lowercase;
    private readonly List<SimpleNormalizer> _steps;

    private SimpleNormalizer(NormalizationForm? form, bool lowercase, List<SimpleNormalizer>? steps = null)
    {
        _form = form;
        _lowercase = lowercase;
        _steps = steps ?? new();
    }

    public static SimpleNormalizer Form(NormalizationForm form) => new(form, false);
    public static SimpleNormalizer Lowercase() => new(null, true);
    public static SimpleNormalizer Sequence(List<SimpleNormalizer> steps) => new(null, false, steps);

    public override string Normalize(string original)
    {
        string s = original;
        if (_form is { } f) s = s.Normalize(f);
        if (_lowercase) s = s.ToLowerInvariant();
        foreach (var step in _steps) s = step.Normalize(s);
        return s;
    }

    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
}
