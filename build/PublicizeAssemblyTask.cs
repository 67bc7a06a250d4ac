// MSBuild inline task (RoslynCodeTaskFactory): writes a copy of an assembly with every type, method and field made
// public. Used only as a compile-time reference; at run time the real assembly is loaded and
// [IgnoresAccessChecksTo] lets our code call its internals (see src/ML.Finetune/Persistence/README.md).
using System;
using System.IO;
using Microsoft.Build.Framework;
using Mono.Cecil;

namespace ML.Finetune.Build
{
    public class MLFinetunePublicizeAssembly : Microsoft.Build.Utilities.Task
    {
        [Required] public string InputAssembly { get; set; } = "";
        [Required] public string OutputAssembly { get; set; } = "";

        public override bool Execute()
        {
            if (File.Exists(OutputAssembly) && File.GetLastWriteTimeUtc(OutputAssembly) >= File.GetLastWriteTimeUtc(InputAssembly))
                return true; // up to date
            Directory.CreateDirectory(Path.GetDirectoryName(OutputAssembly)!);
            var resolver = new DefaultAssemblyResolver();
            resolver.AddSearchDirectory(Path.GetDirectoryName(InputAssembly));
            using (var asm = AssemblyDefinition.ReadAssembly(InputAssembly, new ReaderParameters { AssemblyResolver = resolver }))
            {
                foreach (var type in asm.MainModule.GetTypes())
                {
                    if (type.IsNested) type.IsNestedPublic = true; else type.IsPublic = true;
                    foreach (var m in type.Methods) m.IsPublic = true;
                    foreach (var f in type.Fields)
                    {
                        // Backing fields of events would clash with the event name once public; leave compiler-generated ones alone.
                        if (f.Name.Contains("<")) continue;
                        f.IsPublic = true;
                    }
                }
                string tmp = OutputAssembly + ".tmp";
                asm.Write(tmp);
                if (File.Exists(OutputAssembly)) File.Delete(OutputAssembly);
                File.Move(tmp, OutputAssembly);
            }
            return true;
        }
    }
}
