namespace ML.Finetune.Chat.Jinja;

/// <summary>A template failed to parse or render. <see cref="Line"/> and <see cref="Column"/> are 1-based positions in the template source.</summary>
public class JinjaException : Exception
{
    public JinjaException(string message, int line, int column)
        : this(line > 0 ? $"{message} (template line {line}, column {column})" : message, message, line, column)
    {
    }

    protected JinjaException(string fullMessage, string detail, int line, int column) : base(fullMessage)
    {
        Detail = detail;
        Line = line;
        Column = column;
    }

    /// <summary>The message without the position suffix.</summary>
    public string Detail { get; }
    public int Line { get; }
    public int Column { get; }
}

/// <summary>The template is not valid Jinja (jinja2 raises <c>TemplateSyntaxError</c> for the same source).</summary>
public sealed class JinjaSyntaxException : JinjaException
{
    public JinjaSyntaxException(string message, int line, int column) : base(message, line, column) { }
}

/// <summary>Rendering failed the way jinja2 fails at run time (undefined value used, type error, ...).</summary>
public class JinjaRuntimeException : JinjaException
{
    public JinjaRuntimeException(string message, int line, int column) : base(message, line, column) { }
}

/// <summary>The template called <c>raise_exception(message)</c>; <see cref="JinjaException.Detail"/> is that message.</summary>
public sealed class TemplateRaisedException : JinjaRuntimeException
{
    public TemplateRaisedException(string message, int line, int column) : base(message, line, column) { }
}

/// <summary>
/// The template uses a Jinja construct this interpreter does not implement. Rendering stops instead of producing
/// text that could differ from jinja2's.
/// </summary>
public sealed class JinjaNotImplementedException : JinjaException
{
    public JinjaNotImplementedException(string construct, int line, int column)
        : base($"not implemented: {construct} at {line}:{column}", $"not implemented: {construct}", line, column)
    {
        Construct = construct;
    }

    /// <summary>The construct, e.g. <c>filter 'xmlattr'</c> or <c>statement 'include'</c>.</summary>
    public string Construct { get; }
}

/// <summary>A Python-level error raised by a value operation; the interpreter attaches the template position.</summary>
internal sealed class PyError : Exception
{
    public enum ErrorKind { Runtime, NotImplemented, Raised }

    public PyError(string message, ErrorKind kind = ErrorKind.Runtime) : base(message) => Kind = kind;

    public ErrorKind Kind { get; }

    public static PyError Type(string message) => new(message);

    /// <summary>Valid Python/Jinja that this interpreter does not support; the message names the construct.</summary>
    public static PyError Unsupported(string construct) => new(construct, ErrorKind.NotImplemented);

    /// <summary>The template's own <c>raise_exception(message)</c>.</summary>
    public static PyError Raised(string message) => new(message, ErrorKind.Raised);

    public JinjaException WithPosition(int line, int column) => Kind switch
    {
        ErrorKind.NotImplemented => new JinjaNotImplementedException(Message, line, column),
        ErrorKind.Raised => new TemplateRaisedException(Message, line, column),
        _ => new JinjaRuntimeException(Message, line, column),
    };
}
