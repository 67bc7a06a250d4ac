using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ML.Finetune.Runtime;

/// <summary>
/// Gives every parameter of a module tree built on the meta device (<see cref="MetaConstruction"/>) real storage,
/// PyTorch's <c>Module.to_empty</c> with a filler: <c>make(name, metaParameter)</c> returns the tensor the parameter
/// becomes (right shape, dtype and device, filled or not). A meta tensor cannot be moved or copied, and libtorch
/// refuses <c>set_</c> across devices, so each Parameter object is replaced wherever the module holds it, as
/// TorchSharp's own <c>Module.to</c> does: in the registration, in every field that references it, and for a native
/// module (whose weight lives in C++) through its property setter.
/// </summary>
public static class ModuleMaterializer
{
    static readonly MethodInfo Register = typeof(nn.Module).GetMethod("ConditionallyRegisterParameter",
        BindingFlags.Instance | BindingFlags.NonPublic, [typeof(string), typeof(Parameter)])
        ?? throw new MissingMethodException("TorchSharp nn.Module.ConditionallyRegisterParameter(string, Parameter) not found");

    /// <summary>
    /// Replaces every parameter (dotted names as in <c>named_parameters()</c>, in that order). A parameter object shared
    /// by several modules is made once and stays shared. requires_grad is carried over. Throws if a buffer or a
    /// tensor field is still on the meta device afterwards (a constructor that computed values, which meta loses).
    /// </summary>
    public static void Materialize(nn.Module root, Func<string, Parameter, Tensor> make)
    {
        var made = new Dictionary<Parameter, Parameter>(ReferenceEqualityComparer.Instance);
        using (torch.no_grad()) Walk(root, "", make, made);
        foreach (var old in made.Keys) old.Dispose();
        CheckNothingMeta(root, "");
    }

    static void Walk(nn.Module module, string prefix, Func<string, Parameter, Tensor> make, Dictionary<Parameter, Parameter> made)
    {
        foreach (var (name, old) in module.named_parameters(recurse: false).ToList())
        {
            if (!made.TryGetValue(old, out var fresh))
            {
                var t = make(prefix + name, old);
                if (!t.shape.SequenceEqual(old.shape))
                    throw new InvalidOperationException($"materializing '{prefix + name}': got shape [{string.Join(",", t.shape)}] for [{string.Join(",", old.shape)}]");
                fresh = new Parameter(t, old.requires_grad);
                made[old] = fresh;
            }
            Replace(module, name, old, fresh);
        }
        foreach (var (name, child) in module.named_children()) Walk(child, prefix + name + ".", make, made);
    }

    static void Replace(nn.Module module, string name, Parameter old, Parameter fresh)
    {
        // A parameter held in a field (our modules, TorchSharp's managed ones such as LayerNorm and Linear) is
        // replaced in the field and the registration; TorchSharp's setters are not used there, as some dispose what
        // they replace (a parameter another module may share) or what the field holds. A parameter held by no field
        // lives in a native module (nn.Embedding): only its property setter reaches the C++ side.
        var type = module.GetType();
        bool inField = false;
        for (var t = type; t != null && t != typeof(object); t = t.BaseType)
            foreach (var f in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                if (f.FieldType.IsAssignableFrom(typeof(Parameter)) && ReferenceEquals(f.GetValue(module), old))
                {
                    f.SetValue(module, fresh);
                    inField = true;
                }
        var property = type.GetProperty(name, BindingFlags.Instance | BindingFlags.Public);
        if (!inField && property is { CanWrite: true } && property.PropertyType.IsAssignableFrom(typeof(Parameter)))
            property.SetValue(module, fresh);
        Register.Invoke(module, [name, fresh]);
        var registered = module.named_parameters(recurse: false).FirstOrDefault(p => p.name == name).parameter;
        if (registered is null || registered.Handle != fresh.Handle)
            throw new InvalidOperationException($"could not replace parameter '{name}' of {type.Name}");
    }

    static void CheckNothingMeta(nn.Module module, string prefix)
    {
        foreach (var (name, p) in module.named_parameters(recurse: false))
            if (p.device_type == DeviceType.META) throw MetaLeft(module, prefix + name, "parameter");
        foreach (var (name, b) in module.named_buffers(recurse: false))
            if (b.device_type == DeviceType.META) throw MetaLeft(module, prefix + name, "buffer");
        for (var t = module.GetType(); t != null && t != typeof(nn.Module) && t != typeof(object); t = t.BaseType)
            foreach (var f in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                if (typeof(Tensor).IsAssignableFrom(f.FieldType) && f.GetValue(module) is Tensor { IsInvalid: false } v && v.device_type == DeviceType.META)
                    throw MetaLeft(module, prefix + f.Name, "tensor field");
        foreach (var (name, child) in module.named_children()) CheckNothingMeta(child, prefix + name + ".");
    }

    static InvalidOperationException MetaLeft(nn.Module m, string what, string kind) =>
        new($"{m.GetType().Name}: {kind} '{what}' is still on the meta device after loading. Module constructors must only " +
            "create parameters (their values come from the checkpoint); compute other tensors in forward or lazily.");
}
